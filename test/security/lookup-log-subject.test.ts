import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { buildClaims, sealRequest } from '../../adapters/livetex/codec.js';
import { ADMIN, startLoggedBridge } from './support.js';

/**
 * The LiveTex lookup's log line names its subject (the company's customer id) by a hash. An
 * unkeyed SHA-256 let anyone who reads the logs confirm a guess (customer ids are often
 * sequential, or e-mails) by hashing it; the hash is now keyed by secrets.masterKey, so instances
 * that share the key log one customer alike and nobody without it can test a guess.
 */
describe('LiveTex lookup log: the subject hash', () => {
  const running: Awaited<ReturnType<typeof startLoggedBridge>>[] = [];
  afterAll(async () => {
    await Promise.all(running.map((bridge) => bridge.close()));
  });

  /** A bridge with its own store and this master key, and the subject its lookup of `personId` logs. */
  async function loggedSubject(masterKey: string, personId: string): Promise<string> {
    const bridge = await startLoggedBridge({
      secrets: { masterKey },
      channels: [{ id: 'app', vendor: 'livetex', token: 'app-webhook-token-0123456789' }],
    });
    running.push(bridge);
    const created = await fetch(`${bridge.url}/api/v1/channels/app/keys`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN}` },
    });
    expect(created.status).toBe(201);
    const key = (await created.json()) as { kid: string; key: string };
    const claims = buildClaims({
      subject: { personId },
      requestId: randomUUID(),
      jti: randomUUID(),
      iat: Date.now() / 1000,
    });
    const body = await sealRequest(claims, key.kid, new Uint8Array(Buffer.from(key.key, 'base64url')));
    const response = await fetch(`${bridge.url}/livetex/app/attributes`, {
      method: 'POST',
      headers: { 'content-type': 'application/jose' },
      body,
    });
    expect(response.status).toBe(200);
    const [line] = bridge.lines
      .filter((text) => text.includes('livetex attribute lookup'))
      .map((text) => JSON.parse(text) as { subject: string });
    expect(line, 'the lookup is logged').toBeDefined();
    expect(JSON.stringify(bridge.lines)).not.toContain(personId);
    return line!.subject;
  }

  it('is the same on instances sharing the master key, and not a hash anyone can compute', async () => {
    const masterKey = randomBytes(32).toString('base64');
    const personId = 'cust-000042';
    const first = await loggedSubject(masterKey, personId);
    const second = await loggedSubject(masterKey, personId);
    const otherKey = await loggedSubject(randomBytes(32).toString('base64'), personId);

    expect(first).toMatch(/^[0-9a-f]{16}$/);
    expect(second).toBe(first);
    expect(otherKey).not.toBe(first);
    // What the old line held: SHA-256 of the id, which a log reader could compute for a guess.
    const unkeyed = createHash('sha256').update(personId).digest('hex').slice(0, 16);
    expect(first).not.toBe(unkeyed);
  });
});
