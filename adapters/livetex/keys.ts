import { createCipheriv, createDecipheriv, createSecretKey, type KeyObject, randomBytes } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { z } from 'zod';
import { quotedInput } from '../../src/contacts/normalize.js';
import type { ChannelRoute, CliCommand, CliCommandInfo } from '../../src/contracts/adapter.js';
import { digest } from '../../src/digest.js';
import { AppError, BadRequestError, NotFoundError } from '../../src/errors.js';
import type { Store } from '../../src/store/types.js';
import { KEY_BYTES } from './codec.js';

/**
 * The channel's attribute keys (DESIGN §6): random 256-bit keys named by a `kid`, several valid at
 * once for rotation, each revocable. Key material is kept encrypted at rest with the master key
 * (AES-256-GCM, the channel and kid as additional data so a record cannot be moved to another
 * channel or kid). The stored record decides every lookup, so a revocation on one instance is in
 * force on every instance at once: a lookup opened with a key kept in process (the opened
 * material and its import, per kid) spends its token only in a store step that finds the record
 * still byte for byte the one they were made from (the lookup's Claim.onlyIf, lookup.ts); a
 * request that key does not open reads the record first (resolve: one HGET), as does a kid not
 * kept. A revoked record has no material and differs, so a revoked key is never served.
 */

export interface KeySummary {
  kid: string;
  createdAt: string;
  revokedAt: string | null;
}

export interface GeneratedKey {
  kid: string;
  /** base64url; shown once, never stored in clear. */
  key: string;
  createdAt: string;
}

/** An active key, opened: the material, its import, and the stored record it came from. */
export interface ActiveKey {
  state: 'active';
  key: Uint8Array;
  /** The same key as a KeyObject, made once (what the codec uses). */
  imported: KeyObject;
  /**
   * Where the record lives and its text, byte for byte: the lookup claims its token only while
   * the store still holds exactly this (Claim.onlyIf), so a revocation holds from the moment it
   * is written.
   */
  record: { hash: string; field: string; value: string };
}

export type ResolvedKey = ActiveKey | { state: 'revoked' } | { state: 'unknown' };

/** Opened keys kept per channel: far more than a channel rotates through. */
const OPENED_KEYS_MAX = 256;

/**
 * The replay guard of a lookup token (DESIGN §6): its jti, claimed (SET NX) by the first request
 * that carries it and kept until the token could no longer pass the time check anyway, on any
 * instance. Shared by every instance; the key holds a hash of the jti, never the jti.
 *
 * The time to live is counted on the claiming instance's clock, but the time check runs on
 * whichever instance the replay reaches: had the key lived only until exp + skew by the claiming
 * instance's clock, an instance whose clock is a few seconds behind would still pass the token
 * after the key expired, and accept the replay. So the key lives another maxClockSkewSeconds:
 * instances may disagree by as much as the caller may disagree with us.
 */
export function jtiClaim(
  channelId: string,
  claims: { jti: string; exp: number },
  maxClockSkewSeconds: number,
  now: Date,
): { key: string; ttlMs: number } {
  const validUntilMs = (claims.exp + 2 * maxClockSkewSeconds) * 1000;
  const ttlMs = Math.max(1000, Math.ceil(validUntilMs - now.getTime()) + 1000);
  return {
    // Lossless (src/digest.ts): two jti that differ only in a lone surrogate are two tokens.
    key: `livetex:${channelId}:jti:${digest('sha256', claims.jti, 'base64url')}`,
    ttlMs,
  };
}

const storedKeySchema = z.object({
  kid: z.string(),
  createdAt: z.string(),
  revokedAt: z.string().nullable(),
  /** Absent once revoked: a revoked key is never needed again, so its material is erased. */
  sealed: z.object({ iv: z.string(), data: z.string(), tag: z.string() }).optional(),
});
type StoredKey = z.infer<typeof storedKeySchema>;

export const KID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;

/** The master key changed or the record was altered: an operator problem, not the caller's. */
export class KeyStoreUnreadableError extends AppError {
  constructor(kid: string, cause?: unknown) {
    super(
      'key_store_unreadable',
      500,
      `the stored key ${kid} cannot be decrypted with secrets.masterKey (was the master key changed?)`,
      { cause },
    );
  }
}

function parseRecord(kid: string, raw: string): StoredKey {
  let document: unknown;
  try {
    document = JSON.parse(raw);
  } catch (error) {
    throw new KeyStoreUnreadableError(kid, error);
  }
  const parsed = storedKeySchema.safeParse(document);
  if (!parsed.success) throw new KeyStoreUnreadableError(kid, parsed.error);
  return parsed.data;
}

export interface LivetexKeyStore {
  generate(): Promise<GeneratedKey>;
  list(): Promise<KeySummary[]>;
  /** Null when the kid is unknown; revoking twice keeps the first revocation time. */
  revoke(kid: string): Promise<KeySummary | null>;
  /** Reads the key's record (one HGET) and opens it. */
  resolve(kid: string): Promise<ResolvedKey>;
  /** As resolve, from a record text the caller read itself (null: no record), without a read. */
  resolveFrom(kid: string, raw: string | null): ResolvedKey;
  /**
   * The key as last opened in this process, without a read; undefined when it was not (or not
   * lately). Only a guess at what the store holds: whoever acts on it must check that the store
   * still holds `record.value` in the step that acts (the lookup's Claim.onlyIf).
   */
  remembered(kid: string): ActiveKey | undefined;
}

export function createLivetexKeyStore(options: {
  store: Store;
  channelId: string;
  masterKey: Buffer;
  now: () => Date;
}): LivetexKeyStore {
  const { store, channelId, masterKey, now } = options;
  if (masterKey.length !== 32) throw new TypeError('the master key must be 32 bytes');
  const hashKey = `livetex:${channelId}:keys`;
  const additionalData = (kid: string) => Buffer.from(`livetex:${channelId}:${kid}`, 'utf8');

  function sealMaterial(kid: string, material: Buffer): NonNullable<StoredKey['sealed']> {
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', masterKey, iv);
    cipher.setAAD(additionalData(kid));
    const data = Buffer.concat([cipher.update(material), cipher.final()]);
    return {
      iv: iv.toString('base64url'),
      data: data.toString('base64url'),
      tag: cipher.getAuthTag().toString('base64url'),
    };
  }

  /**
   * `kid` is where the record was read from (the hash field), not the kid written inside it: the
   * additional data binds the material to its storage location, so a record copied under
   * another kid does not decrypt.
   */
  function openMaterial(kid: string, sealed: NonNullable<StoredKey['sealed']>): Uint8Array {
    try {
      const decipher = createDecipheriv('aes-256-gcm', masterKey, Buffer.from(sealed.iv, 'base64url'));
      decipher.setAAD(additionalData(kid));
      decipher.setAuthTag(Buffer.from(sealed.tag, 'base64url'));
      const material = Buffer.concat([
        decipher.update(Buffer.from(sealed.data, 'base64url')),
        decipher.final(),
      ]);
      if (material.length !== KEY_BYTES) throw new Error(`decrypted key has ${material.length} bytes`);
      return new Uint8Array(material);
    } catch (error) {
      throw new KeyStoreUnreadableError(kid, error);
    }
  }

  /** kid -> the key as opened from its record's text (ActiveKey.record.value). */
  const opened = new LRUCache<string, ActiveKey>({ max: OPENED_KEYS_MAX });

  function resolveFrom(kid: string, raw: string | null): ResolvedKey {
    if (!KID_PATTERN.test(kid)) return { state: 'unknown' };
    const cached = opened.get(kid);
    if (raw !== null && cached?.record.value === raw) return cached;
    opened.delete(kid);
    if (raw === null) return { state: 'unknown' };
    const record = parseRecord(kid, raw);
    if (record.revokedAt !== null || !record.sealed) return { state: 'revoked' };
    const key = openMaterial(kid, record.sealed);
    const active: ActiveKey = {
      state: 'active',
      key,
      imported: createSecretKey(key),
      record: { hash: hashKey, field: kid, value: raw },
    };
    opened.set(kid, active);
    return active;
  }

  async function read(kid: string): Promise<StoredKey | null> {
    if (!KID_PATTERN.test(kid)) return null;
    const raw = await store.hget(hashKey, kid);
    return raw === null ? null : parseRecord(kid, raw);
  }

  const summary = (record: StoredKey): KeySummary => ({
    kid: record.kid,
    createdAt: record.createdAt,
    revokedAt: record.revokedAt,
  });

  return {
    async generate() {
      const material = randomBytes(KEY_BYTES);
      // 96 random bits: kids are public (they travel in every JWE header) but must never collide.
      const kid = `k_${randomBytes(12).toString('base64url')}`;
      const createdAt = now().toISOString();
      const record: StoredKey = { kid, createdAt, revokedAt: null, sealed: sealMaterial(kid, material) };
      await store.hset(hashKey, kid, JSON.stringify(record));
      return { kid, key: material.toString('base64url'), createdAt };
    },

    async list() {
      const all = await store.hgetall(hashKey);
      const out: KeySummary[] = [];
      for (const [kid, raw] of Object.entries(all)) {
        out.push(summary(parseRecord(kid, raw)));
      }
      return out.sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.kid.localeCompare(b.kid));
    },

    async revoke(kid) {
      const record = await read(kid);
      if (!record) return null;
      if (record.revokedAt !== null) return summary(record);
      const revoked: StoredKey = {
        kid: record.kid,
        createdAt: record.createdAt,
        revokedAt: now().toISOString(),
      };
      await store.hset(hashKey, kid, JSON.stringify(revoked));
      return summary(revoked);
    },

    async resolve(kid) {
      if (!KID_PATTERN.test(kid)) return { state: 'unknown' };
      // The stored record decides, so a revocation holds at once.
      return resolveFrom(kid, await store.hget(hashKey, kid));
    },

    resolveFrom,

    remembered(kid) {
      return opened.get(kid);
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Admin API (DESIGN §4) and CLI (DESIGN §5)

const keySummarySchema = z.object({
  kid: z.string(),
  createdAt: z.string(),
  revokedAt: z.string().nullable(),
});
const generatedKeySchema = z.object({ kid: z.string(), key: z.string(), createdAt: z.string() });

function unknownKid(kid: string): NotFoundError {
  // The kid comes from the path: quoted cut and clean, as every 404 quotes an id (quotedInput).
  return new NotFoundError('unknown_key', `no key "${quotedInput(kid)}" on this channel`);
}

export function keyRoutes(keys: LivetexKeyStore): ChannelRoute[] {
  return [
    {
      method: 'POST',
      path: 'keys',
      summary: 'Generate a LiveTex attribute key; the key material is shown only in this answer',
      response: generatedKeySchema,
      status: 201,
      async handle() {
        return { body: await keys.generate(), headers: { 'cache-control': 'no-store' } };
      },
    },
    {
      method: 'GET',
      path: 'keys',
      summary: "List the channel's attribute keys (never the key material)",
      response: z.object({ keys: z.array(keySummarySchema) }),
      async handle() {
        return { body: { keys: await keys.list() } };
      },
    },
    {
      method: 'DELETE',
      path: 'keys/:kid',
      summary: 'Revoke an attribute key: lookups under it are refused at once, on every instance',
      response: keySummarySchema,
      async handle(request) {
        const kid = request.params.kid ?? '';
        const revoked = await keys.revoke(kid);
        if (!revoked) throw unknownKid(kid);
        return { body: revoked };
      },
    },
  ];
}

/** The key commands as `chatbridge --help` shows them (the runtime's commands below carry these). */
export const KEY_COMMANDS = {
  generate: {
    name: 'keys generate',
    summary: 'Generate an attribute key (printed once as JSON: kid, key, createdAt)',
  },
  list: { name: 'keys list', summary: 'List attribute keys, one JSON line each (kid, createdAt, revokedAt)' },
  revoke: {
    name: 'keys revoke',
    summary: 'Revoke an attribute key (takes effect at once on every instance)',
    options: { kid: { description: 'the key id to revoke', takesValue: true, required: true } },
  },
} satisfies Record<string, CliCommandInfo>;

export function keyCommands(keys: LivetexKeyStore, store: Store, channelId: string): CliCommand[] {
  const warnIfEphemeral = (io: { stderr(line: string): void }) => {
    if (store.kind === 'memory') {
      io.stderr('warning: the in-memory store keeps nothing after this command exits; configure store.redis');
    }
  };
  return [
    {
      ...KEY_COMMANDS.generate,
      async run(_options, io) {
        warnIfEphemeral(io);
        const generated = await keys.generate();
        io.stdout(JSON.stringify(generated));
        io.stderr(
          `key ${generated.kid} generated; give "kid" and "key" to LiveTex — the key is not shown again`,
        );
        return generated;
      },
    },
    {
      ...KEY_COMMANDS.list,
      async run(_options, io) {
        warnIfEphemeral(io);
        const list = await keys.list();
        for (const key of list) io.stdout(JSON.stringify(key));
        if (list.length === 0) {
          const generate = `keys generate --channel ${channelId}`;
          io.stderr(
            `no keys on channel ${channelId}; run \`${io.command?.(generate) ?? `chatbridge ${generate}`}\``,
          );
        }
        return list;
      },
    },
    {
      ...KEY_COMMANDS.revoke,
      async run(options, io) {
        const kid = options.kid;
        if (typeof kid !== 'string' || kid === '')
          throw new BadRequestError('missing_option', '--kid KID is required');
        warnIfEphemeral(io);
        const revoked = await keys.revoke(kid);
        if (!revoked) throw unknownKid(kid);
        io.stdout(JSON.stringify(revoked));
        return revoked;
      },
    },
  ];
}
