import { createServer, type Server } from 'node:http';
import { connect } from 'node:net';
import { Readable } from 'node:stream';
import type { Context } from 'koa';
import Koa from 'koa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EarlyContext, KoaWithEarlyPath } from '../src/http/early.js';

/**
 * EarlyContext (src/http/early.ts) answers as Koa answers: the same handler, run once by Koa and
 * once on an EarlyContext, must put the same bytes on the wire (status line, every header in
 * order and letter case, body), the Date line aside. The early tests compare the routes' own
 * answers; this compares what those routes could set, one case at a time.
 */

type Script = (ctx: Context) => void;

const cases: Record<string, Script> = {
  'an object, no type': (ctx) => {
    ctx.body = { result: 'ok', n: 1 };
  },
  'an object with a JSON type and a header': (ctx) => {
    ctx.set('x-request-id', 'abc');
    ctx.status = 200;
    ctx.type = 'application/json; charset=utf-8';
    ctx.body = { a: [1, 2, 'é'] };
  },
  'bytes with their type and Cache-Control': (ctx) => {
    ctx.status = 200;
    ctx.set('cache-control', 'no-store');
    ctx.type = 'application/jose';
    ctx.body = Buffer.from('eyJ.abc.def');
  },
  text: (ctx) => {
    ctx.body = 'plain words';
  },
  HTML: (ctx) => {
    ctx.body = '  <p>hi</p>';
  },
  'a 404 with the JSON error': (ctx) => {
    ctx.status = 404;
    ctx.body = { error: { code: 'not_found', message: 'no such route' } };
  },
  'no body set: the status text': (ctx) => {
    ctx.status = 503;
  },
  'nothing set at all': () => {},
  'null without a type: 204': (ctx) => {
    ctx.body = null;
  },
  'undefined, no type: 204': (ctx) => {
    ctx.body = undefined;
  },
  'null with the JSON type': (ctx) => {
    ctx.type = 'json';
    ctx.body = null;
  },
  'a 205 with no body': (ctx) => {
    ctx.status = 205;
  },
  'a 304 with a header': (ctx) => {
    ctx.set('etag', '"x"');
    ctx.status = 304;
  },
  'a 204 with a body': (ctx) => {
    ctx.body = { dropped: true };
    ctx.status = 204;
  },
  'an unknown status': (ctx) => {
    ctx.status = 599;
    ctx.body = { odd: true };
  },
  'a header set twice in two spellings, one removed, Connection: close': (ctx) => {
    ctx.set('X-One', '1');
    ctx.set('x-two', '2');
    ctx.set('x-one', 'again');
    ctx.remove('x-two');
    ctx.set('Retry-After', '30');
    ctx.set('connection', 'close');
    ctx.status = 429;
    ctx.body = { error: { code: 'too_many_requests' } };
  },
  'no Date': (ctx) => {
    ctx.remove('Date');
    ctx.body = { dated: false };
  },
  'a header value Node refuses': (ctx) => {
    ctx.set('x-bad', 'a\nb');
    ctx.body = { unreachable: true };
  },
  'Content-Type as a list of one': (ctx) => {
    ctx.set('Content-Type', ['text/csv']);
    ctx.body = 'a,b';
  },
  'a body that JSON cannot write': (ctx) => {
    ctx.set('x-kept', 'no');
    ctx.body = { big: 1n };
  },
  'an error the handler throws, exposed': (ctx) => {
    ctx.set('x-kept', 'no');
    throw Object.assign(new Error('bad input'), { status: 400, expose: true, headers: { 'x-why': 'bad' } });
  },
  'an error the handler throws, not exposed': () => {
    throw new Error('secret detail');
  },
};

let server: Server;
let port = 0;

beforeAll(async () => {
  const koa = new Koa();
  koa.silent = true;
  koa.use((ctx) => cases[ctx.get('x-case')]!(ctx));
  const viaKoa = koa.callback();
  const app = new KoaWithEarlyPath({ proxy: false, maxIpsCount: 0 });
  app.silent = true;
  app.on('error', () => {});
  server = createServer((req, res) => {
    if (req.headers['x-via'] === 'koa') {
      void viaKoa(req, res);
      return;
    }
    const early = new EarlyContext(req, res, app.mediaType);
    try {
      cases[req.headers['x-case'] as string]!(early as unknown as Context);
      early.answer();
    } catch (error) {
      early.fail(app, error);
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as { port: number }).port;
});
afterAll(async () => {
  await new Promise((resolve) => server.close(resolve));
});

/** The raw answer to one POST, its Date line's value blanked. */
function raw(name: string, via: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    let text = '';
    socket.on('data', (chunk) => {
      text += chunk.toString('latin1');
    });
    socket.on('end', () => resolve(text.replace(/\r\nDate: [^\r]*/, '\r\nDate: *')));
    socket.on('error', reject);
    socket.end(
      `POST /x HTTP/1.1\r\nHost: localhost\r\nx-case: ${name}\r\nx-via: ${via}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`,
    );
  });
}

describe('an EarlyContext answers as Koa answers', () => {
  it.each(Object.keys(cases))('%s', async (name) => {
    const early = await raw(name, 'early');
    expect(early).toMatch(/^HTTP\/1\.1 \d{3} /);
    expect(early).toBe(await raw(name, 'koa'));
  });

  it('refuses a stream as a body (no answer served ahead of Koa is one)', () => {
    const early = new EarlyContext(
      { method: 'POST', url: '/x', headers: {} } as never,
      { headersSent: false } as never,
      () => undefined,
    );
    expect(() => {
      early.body = Readable.from(['x']);
    }).toThrow('not a stream');
  });
});
