import { maxHeaderSize, STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import { errorBody } from './errors.js';

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
      'Connection: close\r\n\r\n' +
      body,
  );
}
