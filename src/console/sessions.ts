import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { z } from 'zod';
import type { Store } from '../store/types.js';

/**
 * Console sessions live in the store (not in process memory), so every instance behind a load
 * balancer knows them and a restart signs nobody out. The store key is a hash of the session id:
 * reading the store does not give anyone a usable cookie.
 */
export const SESSION_TTL_MS = 12 * 3_600_000;

const sessionSchema = z.object({ csrf: z.string().min(16), createdAt: z.string() });
export type Session = z.infer<typeof sessionSchema> & { id: string };

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

export function createSessions(store: Store, now: () => Date): Sessions {
  return {
    async create() {
      const session = { id: newToken(), csrf: newToken(), createdAt: now().toISOString() };
      await store.set(
        storeKey(session.id),
        JSON.stringify({ csrf: session.csrf, createdAt: session.createdAt }),
        { ttlMs: SESSION_TTL_MS },
      );
      return session;
    },
    async get(id) {
      if (!id || !/^[A-Za-z0-9_-]{20,100}$/.test(id)) return null;
      const raw = await store.get(storeKey(id));
      if (!raw) return null;
      try {
        const parsed = sessionSchema.safeParse(JSON.parse(raw));
        return parsed.success ? { ...parsed.data, id } : null;
      } catch {
        return null;
      }
    },
    async destroy(id) {
      await store.del(storeKey(id));
    },
  };
}
