import { createHmac } from 'node:crypto';

/**
 * Standard Webhooks signing (https://www.standardwebhooks.com): HMAC-SHA256 over
 * `${webhook-id}.${webhook-timestamp}.${body}` with the base64-decoded part of the `whsec_`
 * secret, sent as `webhook-signature: v1,<base64>`. Written here with node:crypto (a dozen lines);
 * the tests check it against the official `standardwebhooks` verifier.
 */
const SECRET_PREFIX = 'whsec_';

export function secretKey(secret: string): Buffer {
  const encoded = secret.startsWith(SECRET_PREFIX) ? secret.slice(SECRET_PREFIX.length) : secret;
  return Buffer.from(encoded, 'base64');
}

export function sign(key: Buffer, id: string, timestampSeconds: number, body: string): string {
  const digest = createHmac('sha256', key).update(`${id}.${timestampSeconds}.${body}`).digest('base64');
  return `v1,${digest}`;
}

/**
 * The three Standard Webhooks headers for one attempt (the timestamp is the attempt's, not the
 * event's). With several keys (a secret being rotated: the current one first) the signature
 * header lists one signature per key, space-separated, as the specification provides for
 * rotation: a receiver accepts the request when any of them verifies under its secret.
 */
export function webhookHeaders(
  keys: Buffer | readonly Buffer[],
  id: string,
  at: Date,
  body: string,
): Record<string, string> {
  const timestamp = Math.floor(at.getTime() / 1000);
  const all = Buffer.isBuffer(keys) ? [keys] : keys;
  return {
    'webhook-id': id,
    'webhook-timestamp': String(timestamp),
    'webhook-signature': all.map((key) => sign(key, id, timestamp, body)).join(' '),
  };
}
