import { IncomingMessage, ServerResponse } from 'node:http';
import { Socket } from 'node:net';

/**
 * One request handed to an HTTP handler (`app.callback()`) without a socket: Node's own
 * IncomingMessage and ServerResponse, as its HTTP server makes them, minus the parser and the
 * socket. The response's bytes (status line, headers, body) are formatted as for a socket and
 * kept in the response's output buffer. What this measures is everything above Node's HTTP
 * parser and below the socket write: Koa, the routers, the middleware, the handler.
 * Resolves with the response once the handler's promise has settled (`readInjected` reads it).
 */
const socket = new Socket();
export async function inject(handler, { method, url, headers, body }) {
  const req = new IncomingMessage(socket);
  req.method = method;
  req.url = url;
  req.httpVersionMajor = 1;
  req.httpVersionMinor = 1;
  req.httpVersion = '1.1';
  const raw = [];
  const parsed = {};
  for (const name in headers) {
    raw.push(name, headers[name]);
    parsed[name.toLowerCase()] = headers[name];
  }
  if (body) {
    raw.push('content-length', String(body.length));
    parsed['content-length'] = String(body.length);
  }
  req.rawHeaders = raw;
  // Node 20's parser fills `headers` as well as `rawHeaders` (it builds `headers` from rawHeaders
  // only up to the count its parser recorded, none here): without this, every header read as
  // absent, and the bridge's requireHost (src/http/client-error.ts) answered 400 missing_host.
  req.headers = parsed;
  if (body) req.push(body);
  req.push(null);
  req.complete = true;
  const res = new ServerResponse(req);
  await handler(req, res);
  return res;
}

/** The status and body text of a response made by `inject` (for checking, not in the loop). */
export function readInjected(res) {
  const text = Buffer.concat(
    res.outputData.map(({ data, encoding }) =>
      // A string without an encoding goes to the socket as UTF-8 (the head and a string body share one).
      typeof data === 'string' ? Buffer.from(data, encoding ?? 'utf8') : data,
    ),
  ).toString('utf8');
  return {
    status: res.statusCode,
    text: text.slice(text.indexOf('\r\n\r\n') + 4),
    head: text.slice(0, text.indexOf('\r\n\r\n')),
  };
}
