import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { Webhook, WebhookVerificationError } from 'standardwebhooks';

/**
 * A CRM-like webhook receiver on 127.0.0.1 for delivery tests. It verifies every request with
 * the official `standardwebhooks` package, keeps every attempt it saw (`requests`), and puts each
 * accepted event into its "application" once, deduplicated by webhook-id, as a real receiver
 * should. It fails on demand: an HTTP status (5xx, 4xx, 429 with Retry-After), a hang (for
 * timeouts), or down (the server closed: connection refused) until `up()`.
 */

export type ReceiverAnswer =
  | { kind: 'ok'; status?: number }
  | { kind: 'status'; status: number; retryAfter?: string; body?: string; headers?: Record<string, string> }
  /** Never answer (the sender's timeout fires). */
  | { kind: 'hang' }
  /** Answer 200 after a while (for concurrency measurements). */
  | { kind: 'slow'; ms: number }
  /** Answer 200 once `until` settles: the test decides when (an attempt held in flight). */
  | { kind: 'held'; until: Promise<unknown> }
  /**
   * Send the status line and headers at once, then a body that never ends: one byte every 50 ms
   * until the sender hangs up. A 2xx counts as accepted, as with `ok`.
   */
  | { kind: 'trickle'; status: number };

export interface ReceivedRequest {
  webhookId: string;
  timestamp: string;
  body: string;
  /** Parsed body when verification passed. */
  payload: unknown;
  verified: boolean;
  verifyError?: string;
  headers: IncomingMessage['headers'];
  /** ms since epoch when the request arrived. */
  at: number;
  /** What the receiver answered (0 for a hang). */
  answered: number;
}

export interface ApplicationEvent {
  webhookId: string;
  payload: {
    id: string;
    type: string;
    contact: { id: string } | null;
    data: Record<string, unknown>;
    [key: string]: unknown;
  };
  at: number;
}

export interface Receiver {
  readonly url: string;
  readonly port: number;
  /** Every attempt, in arrival order. */
  readonly requests: ReceivedRequest[];
  /** Accepted events, once per webhook-id, in acceptance order. */
  readonly application: ApplicationEvent[];
  /** Accepted (2xx) answers including repeats of an id already in the application. */
  readonly acceptedCount: number;
  /** Most requests in flight at once. */
  readonly maxInFlight: number;
  /** How to answer from now on: one answer for all, or per request. */
  respond(answer: ReceiverAnswer | ((request: ReceivedRequest) => ReceiverAnswer)): void;
  /** Close the server (connections refused) until up(). */
  down(): Promise<void>;
  up(): Promise<void>;
  /** Resolve when `check()` holds, polling every 20 ms; reject after `timeoutMs`. */
  waitFor(check: () => boolean, timeoutMs?: number, what?: string): Promise<void>;
  close(): Promise<void>;
}

export async function startReceiver(options: { secret: string }): Promise<Receiver> {
  const verifier = new Webhook(options.secret);
  const requests: ReceivedRequest[] = [];
  const application: ApplicationEvent[] = [];
  const seen = new Set<string>();
  const sockets = new Set<Socket>();
  const hanging = new Set<ServerResponse>();
  let answer: (request: ReceivedRequest) => ReceiverAnswer = () => ({ kind: 'ok' });
  let acceptedCount = 0;
  let inFlight = 0;
  let maxInFlight = 0;
  let port = 0;
  let server: Server;

  const header = (req: IncomingMessage, name: string) => {
    const value = req.headers[name];
    return Array.isArray(value) ? (value[0] ?? '') : (value ?? '');
  };

  /** A 2xx answer: the event enters the application once per webhook-id. */
  function accept(request: ReceivedRequest) {
    acceptedCount += 1;
    if (seen.has(request.webhookId)) return;
    seen.add(request.webhookId);
    application.push({
      webhookId: request.webhookId,
      payload: request.payload as ApplicationEvent['payload'],
      at: request.at,
    });
  }

  async function handle(req: IncomingMessage, res: ServerResponse) {
    inFlight += 1;
    maxInFlight = Math.max(maxInFlight, inFlight);
    res.on('close', () => {
      inFlight -= 1;
      hanging.delete(res);
    });
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const body = Buffer.concat(chunks).toString('utf8');
    const request: ReceivedRequest = {
      webhookId: header(req, 'webhook-id'),
      timestamp: header(req, 'webhook-timestamp'),
      body,
      payload: undefined,
      verified: false,
      headers: req.headers,
      at: Date.now(),
      answered: 0,
    };
    try {
      request.payload = verifier.verify(body, {
        'webhook-id': request.webhookId,
        'webhook-timestamp': request.timestamp,
        'webhook-signature': header(req, 'webhook-signature'),
      });
      request.verified = true;
    } catch (error) {
      request.verifyError = error instanceof WebhookVerificationError ? error.message : String(error);
    }
    requests.push(request);
    if (!request.verified) {
      request.answered = 401;
      res.writeHead(401, { 'content-type': 'application/json' }).end('{"error":"bad signature"}');
      return;
    }
    const chosen = answer(request);
    if (chosen.kind === 'hang') {
      hanging.add(res);
      return;
    }
    if (chosen.kind === 'slow') await new Promise((resolve) => setTimeout(resolve, chosen.ms));
    if (chosen.kind === 'held') await chosen.until.catch(() => {});
    if (chosen.kind === 'trickle') {
      request.answered = chosen.status;
      if (chosen.status >= 200 && chosen.status < 300) accept(request);
      res.writeHead(chosen.status, { 'content-type': 'text/plain' });
      res.write('.');
      const drip = setInterval(() => res.write('.'), 50);
      res.on('close', () => clearInterval(drip));
      hanging.add(res);
      return;
    }
    if (chosen.kind === 'status') {
      request.answered = chosen.status;
      res.writeHead(chosen.status, {
        'content-type': 'text/plain',
        ...(chosen.retryAfter !== undefined ? { 'retry-after': chosen.retryAfter } : {}),
        ...chosen.headers,
      });
      res.end(chosen.body ?? `answered ${chosen.status} on purpose`);
      return;
    }
    const status = chosen.kind === 'ok' ? (chosen.status ?? 200) : 200;
    request.answered = status;
    accept(request);
    res.writeHead(status, { 'content-type': 'application/json' }).end('{"ok":true}');
  }

  function listen(onPort: number) {
    server = createServer((req, res) => {
      handle(req, res).catch((error: unknown) => {
        res.writeHead(500).end(String(error));
      });
    });
    server.on('connection', (socket) => {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
    });
    server.listen(onPort, '127.0.0.1');
    return once(server, 'listening');
  }

  async function stop() {
    for (const res of hanging) res.destroy();
    hanging.clear();
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const socket of sockets) socket.destroy();
    await closed;
  }

  await listen(0);
  port = (server!.address() as AddressInfo).port;
  let isUp = true;

  return {
    get url() {
      return `http://127.0.0.1:${port}/hooks`;
    },
    port,
    requests,
    application,
    get acceptedCount() {
      return acceptedCount;
    },
    get maxInFlight() {
      return maxInFlight;
    },
    respond(next) {
      answer = typeof next === 'function' ? next : () => next;
    },
    async down() {
      if (!isUp) return;
      isUp = false;
      await stop();
    },
    async up() {
      if (isUp) return;
      await listen(port);
      isUp = true;
    },
    async waitFor(check, timeoutMs = 10_000, what = 'condition') {
      const deadline = Date.now() + timeoutMs;
      while (!check()) {
        if (Date.now() > deadline) throw new Error(`receiver: ${what} not reached within ${timeoutMs} ms`);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    },
    async close() {
      if (isUp) await stop();
      isUp = false;
    },
  };
}
