import {
  createServer,
  type IncomingMessage,
  maxHeaderSize,
  type RequestListener,
  type Server,
  type ServerResponse,
  STATUS_CODES,
} from 'node:http';
import type { Duplex } from 'node:stream';
import type { Middleware } from 'koa';
import { BadRequestError } from '../errors.js';
import { errorBody } from './errors.js';
import { DEFENSIVE_HEADER_LINES, DEFENSIVE_HEADERS } from './headers.js';

/**
 * The server every listener of the bridge runs (the main port and the metrics listener): what
 * Node would refuse with a bare status line and no body is answered with the JSON error instead.
 * - A request its parser refuses: answerClientError below.
 * - An HTTP/1.1 request without Host: Node's own 400 had no body; `requireHostHeader: false`
 *   leaves it to requireHost() below, which says what is missing.
 * - An `Expect` other than 100-continue: Node's own 417 had no body; answerExpectation below.
 * Found by test/slow/routes.fuzz.test.ts; test/http.client-errors.test.ts checks each.
 */
export function createHttpServer(listener: RequestListener): Server {
  const server = createServer({ requireHostHeader: false }, listener);
  server.on('clientError', answerClientError);
  server.on('checkExpectation', answerExpectation);
  return server;
}

/**
 * HTTP/1.1 requires a Host header (RFC 9112 §3.2) and Node refused a request without one before
 * any middleware ran; with that check left to us (createHttpServer) this is it, as a JSON 400.
 * HTTP/1.0 has no Host to send and is served as before.
 */
export function requireHost(): Middleware {
  return (ctx, next) => {
    const { req } = ctx;
    if (req.httpVersionMajor === 1 && req.httpVersionMinor >= 1 && req.headers.host === undefined)
      throw new BadRequestError('missing_host', 'an HTTP/1.1 request needs a Host header');
    return next();
  };
}

/**
 * An `Expect` the bridge cannot meet (anything but 100-continue, which Node answers itself):
 * 417 with the JSON error naming it, and the connection closed (the body it announced is not read).
 */
export function answerExpectation(req: IncomingMessage, res: ServerResponse): void {
  const sent = String(req.headers.expect ?? '').slice(0, 100);
  const body = JSON.stringify(
    errorBody(
      'expectation_failed',
      `Expect: ${JSON.stringify(sent)} is not supported: send the request without it, or with Expect: 100-continue`,
    ),
  );
  res.shouldKeepAlive = false;
  res.writeHead(417, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    connection: 'close',
    ...DEFENSIVE_HEADERS,
  });
  res.end(body);
}

/**
 * A request Node's HTTP parser refuses never reaches Koa: headers over the size Node takes,
 * malformed chunked encoding, both Content-Length and Transfer-Encoding, a NUL in a header. Node's
 * own answer is a bare `400 Bad Request` (or 431) with no body, which tells a vendor's or an
 * operator's log nothing of what was wrong. This answers with the bridge's JSON error instead,
 * naming the problem (the parser's code), and closes the connection as Node does: what follows
 * on it cannot be framed.
 */
export function answerClientError(error: Error & { code?: string }, socket: Duplex): void {
  // A socket that was reset or is already answering (a response under way on a kept-alive
  // connection): nothing can be written that the client could read as an answer to this request.
  const answering = (socket as { _httpMessage?: { headersSent?: boolean } })._httpMessage;
  if (error.code === 'ECONNRESET' || !socket.writable || answering?.headersSent) {
    socket.destroy();
    return;
  }
  const [status, code, message] =
    error.code === 'HPE_HEADER_OVERFLOW'
      ? [431, 'headers_too_large', `the request's headers are larger than ${maxHeaderSize} bytes in all`]
      : error.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? [408, 'request_timeout', 'the request was not complete in time']
        : [400, 'bad_http', `the request is not valid HTTP/1.1 (${error.code ?? 'unreadable'})`];
  const body = JSON.stringify(errorBody(code, message));
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\n` +
      'Content-Type: application/json; charset=utf-8\r\n' +
      `Content-Length: ${Buffer.byteLength(body)}\r\n` +
      DEFENSIVE_HEADER_LINES +
      'Connection: close\r\n\r\n' +
      body,
  );
}
