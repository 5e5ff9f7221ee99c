import { createServer, request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A loopback proxy in front of a fake CRM for "the CRM did it, the answer was lost": it forwards
 * every request at once (so the fake creates the object), then, for a request matching a rule,
 * holds the answer back for `holdMs` (longer than the destination's timeoutMs) or replaces it
 * with another status (a gateway's 504). Each rule applies `times` times.
 */
export interface LateRule {
  match: (method: string, path: string) => boolean;
  times: number;
  holdMs?: number;
  status?: number;
}

export interface LateProxy {
  url: string;
  /** Hold the next `times` matching answers back for `holdMs`. */
  hold(match: LateRule['match'], holdMs: number, times?: number): void;
  /** Answer the next `times` matching requests with `status` after the CRM has handled them. */
  replace(match: LateRule['match'], status: number, times?: number): void;
  close(): Promise<void>;
}

export async function startLateProxy(target: string): Promise<LateProxy> {
  const rules: LateRule[] = [];
  const upstreamUrl = new URL(target);
  const timers = new Set<NodeJS.Timeout>();
  const server: Server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const body = Buffer.concat(chunks);
      const method = request.method ?? 'GET';
      const path = request.url ?? '/';
      const rule = rules.find((entry) => entry.times > 0 && entry.match(method, path));
      if (rule) rule.times -= 1;
      const upstream = httpRequest(
        {
          host: upstreamUrl.hostname,
          port: upstreamUrl.port,
          method,
          path,
          headers: request.headers,
        },
        (answer) => {
          const parts: Buffer[] = [];
          answer.on('data', (chunk: Buffer) => parts.push(chunk));
          answer.on('end', () => {
            const send = () => {
              if (response.destroyed) return;
              if (rule?.status !== undefined) {
                response.writeHead(rule.status, { 'content-type': 'text/html' });
                response.end('<html>Gateway Time-out</html>');
                return;
              }
              response.writeHead(answer.statusCode ?? 502, answer.headers);
              response.end(Buffer.concat(parts));
            };
            if (rule?.holdMs === undefined) return send();
            const timer = setTimeout(() => {
              timers.delete(timer);
              send();
            }, rule.holdMs);
            timers.add(timer);
          });
        },
      );
      upstream.on('error', () => response.destroy());
      upstream.end(body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    hold(match, holdMs, times = 1) {
      rules.push({ match, holdMs, times });
    },
    replace(match, status, times = 1) {
      rules.push({ match, status, times });
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const timer of timers) clearTimeout(timer);
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
