import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { z } from 'zod';
import type { Store } from '../store/types.js';

/**
 * Console sessions live in the store (not in process memory), so every instance behind a load
 * balancer knows them and a restart signs nobody out. The store key is a hash of the session id:
 * reading the store does not give anyone a usable cookie.
 *
 * A session is bound to the admin token it was signed in with: it stores an HMAC of that token
 * keyed by the session id, and is valid only while the configured token gives the same HMAC. A
 * changed admin token (a leaked one replaced) so ends every session, on every instance. Keyed by
 * the session id, which the store does not hold: a reader of the store cannot test guesses of the
 * token against it. Sessions from before this binding have no HMAC and end too (sign in again).
 */
export const SESSION_TTL_MS = 12 * 3_600_000;

const sessionSchema = z.object({
  csrf: z.string().min(16),
  createdAt: z.string(),
  tokenMac: z.string().min(16),
});
export type Session = Omit<z.infer<typeof sessionSchema>, 'tokenMac'> & { id: string };

const tokenMac = (id: string, adminToken: string) =>
  createHmac('sha256', id).update(`chatbridge console session\0${adminToken}`).digest('base64url');

const storeKey = (id: string) => `console:session:${createHash('sha256').update(id).digest('base64url')}`;

export function newToken(): string {
  return randomBytes(32).toString('base64url');
}

/**
 * Constant-time comparison of a presented token (the admin token at sign-in, a form's CSRF
 * value) with the expected one, over SHA-256 digests: equal lengths whatever was presented, so
 * the comparison does not tell the token's length (no early return on it).
 */
export function sameToken(a: string | undefined, b: string | undefined): boolean {
  if (!a || !b) return false;
  const digest = (text: string) => createHash('sha256').update(text).digest();
  return timingSafeEqual(digest(a), digest(b));
}

export interface Sessions {
  create(): Promise<Session>;
  get(id: string | undefined): Promise<Session | null>;
  destroy(id: string): Promise<void>;
}

export function createSessions(store: Store, now: () => Date, adminToken: string): Sessions {
  return {
    async create() {
      const session = { id: newToken(), csrf: newToken(), createdAt: now().toISOString() };
      await store.set(
        storeKey(session.id),
        JSON.stringify({
          csrf: session.csrf,
          createdAt: session.createdAt,
          tokenMac: tokenMac(session.id, adminToken),
        }),
        { ttlMs: SESSION_TTL_MS },
      );
      return session;
    },
    async get(id) {
      if (!id || !/^[A-Za-z0-9_-]{20,100}$/.test(id)) return null;
      const raw = await store.get(storeKey(id));
      if (!raw) return null;
      let parsed: z.infer<typeof sessionSchema>;
      try {
        const result = sessionSchema.safeParse(JSON.parse(raw));
        if (!result.success) return null;
        parsed = result.data;
      } catch {
        return null;
      }
      const { tokenMac: stored, ...session } = parsed;
      // Signed in under another admin token: not a session here. Not deleted: during a rolling
      // change of admin.token an instance still on the old token would delete the sessions signed
      // in on the new one (signing their users out on every instance); it expires by its TTL.
      if (!sameToken(stored, tokenMac(id, adminToken))) return null;
      return { ...session, id };
    },
    async destroy(id) {
      await store.del(storeKey(id));
    },
  };
}
