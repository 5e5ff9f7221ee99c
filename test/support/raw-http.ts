import { request } from 'node:http';
import { connect } from 'node:net';
import type { TestBridge } from './harness.js';

/** An answer as it came off the socket: status, every header as Node parsed it, the body's text. */
export interface RawAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  /** Every header line as sent, in order and in its letter case: `Name: value`. */
  lines: string[];
  text: string;
}

/**
 * An answer's header lines with the values that differ per request (its id, the date) as `*`:
 * two answers that say the same have the same lines, in the same order and letter case.
 */
export function headLines(answer: RawAnswer): string[] {
  return answer.lines.map((line) => line.replace(/^(date|x-request-id): .*$/i, '$1: *'));
}

/**
 * POST through node:http rather than fetch, so a test sees the headers exactly as sent (fetch
 * folds and hides some) and can send a path fetch would normalise (`%61pp`, a query).
 */
export function rawPost(
  bridge: TestBridge,
  path: string,
  body: string,
  headers: Record<string, string>,
): Promise<RawAnswer> {
  return new Promise<RawAnswer>((resolve, reject) => {
    const sent = request(`${bridge.url}${path}`, { method: 'POST', headers }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () =>
        resolve({
          status: response.statusCode!,
          headers: response.headers,
          lines: response.rawHeaders.flatMap((item, index, all) =>
            index % 2 === 0 ? [`${item}: ${all[index + 1]}`] : [],
          ),
          text: Buffer.concat(chunks).toString('utf8'),
        }),
      );
    });
    // A 413 answers before the whole body is read, and the bridge closes the connection.
    sent.on('error', (error: NodeJS.ErrnoException) => (error.code === 'EPIPE' ? undefined : reject(error)));
    sent.end(body);
  });
}

/**
 * An HTTP/1.1 request without Host (a client a proxy did not fix): raw, as fetch always sends one.
 * Its answer's status line (`HTTP/1.1 400`) and JSON body.
 */
export function postWithoutHost(
  bridge: TestBridge,
  path: string,
): Promise<{ status: string; body: unknown }> {
  const { port } = new URL(bridge.url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), '127.0.0.1');
    let text = '';
    socket.on('data', (chunk) => {
      text += chunk.toString('utf8');
    });
    socket.on('end', () =>
      resolve({ status: text.slice(0, 12), body: JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4)) }),
    );
    socket.on('error', reject);
    socket.end(`POST ${path} HTTP/1.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`);
  });
}
