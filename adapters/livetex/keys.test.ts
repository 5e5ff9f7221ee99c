import { randomBytes } from 'node:crypto';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMemoryStore } from '../../src/store/memory.js';
import { createRedisStore, type RedisStore } from '../../src/store/redis.js';
import type { Store } from '../../src/store/types.js';
import { cleanupPrefix, getTestRedisUrl, uniquePrefix } from '../../test/support/redis.js';
import { createLivetexKeyStore, jtiClaim, KeyStoreUnreadableError, keyCommands } from './keys.js';

const masterKey = randomBytes(32);
const now = () => new Date();

function keyStore(store: Store, channelId = 'app', master = masterKey) {
  return createLivetexKeyStore({ store, channelId, masterKey: master, now });
}

describe('livetex key store (in-memory store)', () => {
  it('generates 256-bit keys with fresh kids, lists them without material, resolves and revokes', async () => {
    const store = createMemoryStore();
    const keys = keyStore(store);
    const first = await keys.generate();
    const second = await keys.generate();
    expect(first.kid).not.toBe(second.kid);
    expect(Buffer.from(first.key, 'base64url')).toHaveLength(32);

    const listed = await keys.list();
    expect(listed.map((key) => key.kid).sort()).toEqual([first.kid, second.kid].sort());
    expect(JSON.stringify(listed)).not.toContain(first.key);
    expect(listed.every((key) => key.revokedAt === null && Object.keys(key).length === 3)).toBe(true);

    const resolved = await keys.resolve(first.kid);
    expect(resolved.state).toBe('active');
    if (resolved.state === 'active') expect(Buffer.from(resolved.key).toString('base64url')).toBe(first.key);

    const revoked = await keys.revoke(first.kid);
    expect(revoked?.revokedAt).toEqual(expect.any(String));
    expect(await keys.resolve(first.kid)).toEqual({ state: 'revoked' });
    // Revoking again keeps the first revocation time.
    expect((await keys.revoke(first.kid))?.revokedAt).toBe(revoked?.revokedAt);
    expect((await keys.resolve(second.kid)).state).toBe('active');
    expect(await keys.revoke('k_nope')).toBeNull();
    expect(await keys.resolve('k_nope')).toEqual({ state: 'unknown' });
    expect(await keys.resolve('not a kid at all / ..')).toEqual({ state: 'unknown' });
  });

  it('opens and imports a key once while its stored record is unchanged, and never serves it once revoked', async () => {
    const store = createMemoryStore();
    const keys = keyStore(store);
    const generated = await keys.generate();
    const first = await keys.resolve(generated.kid);
    const second = await keys.resolve(generated.kid);
    if (first.state !== 'active' || second.state !== 'active') throw new Error('expected an active key');
    expect(second.imported).toBe(first.imported);
    expect(first.imported.type).toBe('secret');
    expect(first.imported.symmetricKeySize).toBe(32);
    expect(first.imported.export()).toEqual(Buffer.from(first.key));
    // Revoked behind this key store's back (as another instance would): refused at once.
    const record = JSON.parse((await store.hget('livetex:app:keys', generated.kid))!);
    await store.hset(
      'livetex:app:keys',
      generated.kid,
      JSON.stringify({ kid: record.kid, createdAt: record.createdAt, revokedAt: new Date().toISOString() }),
    );
    expect(await keys.resolve(generated.kid)).toEqual({ state: 'revoked' });
    // Gone from the store: unknown, not served from memory.
    await store.hdel('livetex:app:keys', generated.kid);
    expect(await keys.resolve(generated.kid)).toEqual({ state: 'unknown' });
  });

  it('remembers a key it opened without a read, with the record it came from; opens from a record it is handed', async () => {
    const store = createMemoryStore();
    const keys = keyStore(store);
    const generated = await keys.generate();
    expect(keys.remembered(generated.kid)).toBeUndefined();
    const raw = (await store.hget('livetex:app:keys', generated.kid))!;
    const opened = keys.resolveFrom(generated.kid, raw);
    if (opened.state !== 'active') throw new Error('expected an active key');
    // What the lookup's claim checks the store still holds (Claim.onlyIf).
    expect(opened.record).toEqual({ hash: 'livetex:app:keys', field: generated.kid, value: raw });
    expect(keys.remembered(generated.kid)).toBe(opened);
    expect(await keys.resolve(generated.kid)).toBe(opened);
    // Handed a revoked record (what a claim found instead): refused and no longer remembered.
    const record = JSON.parse(raw);
    const revoked = JSON.stringify({
      kid: record.kid,
      createdAt: record.createdAt,
      revokedAt: now().toISOString(),
    });
    expect(keys.resolveFrom(generated.kid, revoked)).toEqual({ state: 'revoked' });
    expect(keys.remembered(generated.kid)).toBeUndefined();
    expect(keys.resolveFrom(generated.kid, null)).toEqual({ state: 'unknown' });
    expect(keys.resolveFrom('not a kid / ..', raw)).toEqual({ state: 'unknown' });
  });

  it('never stores key material in clear, and erases it on revocation', async () => {
    const store = createMemoryStore();
    const keys = keyStore(store);
    const generated = await keys.generate();
    const raw = await store.hget('livetex:app:keys', generated.kid);
    expect(raw).not.toBeNull();
    expect(raw).not.toContain(generated.key);
    expect(raw).not.toContain(Buffer.from(generated.key, 'base64url').toString('base64'));
    await keys.revoke(generated.kid);
    expect(JSON.parse((await store.hget('livetex:app:keys', generated.kid))!)).not.toHaveProperty('sealed');
  });

  it('cannot read keys under another master key, nor a record moved to another channel', async () => {
    const store = createMemoryStore();
    const generated = await keyStore(store).generate();
    await expect(keyStore(store, 'app', randomBytes(32)).resolve(generated.kid)).rejects.toBeInstanceOf(
      KeyStoreUnreadableError,
    );
    // The channel is part of the additional data: copying the record elsewhere does not work.
    await store.hset(
      'livetex:other:keys',
      generated.kid,
      (await store.hget('livetex:app:keys', generated.kid))!,
    );
    await expect(keyStore(store, 'other').resolve(generated.kid)).rejects.toBeInstanceOf(
      KeyStoreUnreadableError,
    );
  });

  it('cannot read a record copied under another kid of the same channel (issue 10 item 11)', async () => {
    const store = createMemoryStore();
    const keys = keyStore(store);
    const generated = await keys.generate();
    const raw = (await store.hget('livetex:app:keys', generated.kid))!;
    await store.hset('livetex:app:keys', 'k_copied', raw);
    await expect(keys.resolve('k_copied')).rejects.toBeInstanceOf(KeyStoreUnreadableError);
    expect((await keys.resolve(generated.kid)).state).toBe('active');
  });

  it('keeps channels apart', async () => {
    const store = createMemoryStore();
    const generated = await keyStore(store, 'web').generate();
    expect(await keyStore(store, 'mobile').resolve(generated.kid)).toEqual({ state: 'unknown' });
    expect(await keyStore(store, 'mobile').list()).toEqual([]);
  });

  it('CLI commands print JSON lines and refuse a missing or unknown kid', async () => {
    const store = createMemoryStore();
    const keys = keyStore(store);
    const commands = new Map(keyCommands(keys, store, 'web').map((command) => [command.name, command]));
    const out: string[] = [];
    const err: string[] = [];
    const io = { stdout: (line: string) => out.push(line), stderr: (line: string) => err.push(line) };

    await commands.get('keys generate')!.run({}, io);
    const generated = JSON.parse(out[0]!) as { kid: string; key: string; createdAt: string };
    expect(Buffer.from(generated.key, 'base64url')).toHaveLength(32);
    expect(err.join('\n')).toContain('in-memory store');

    out.length = 0;
    await commands.get('keys list')!.run({}, io);
    expect(out.map((line) => JSON.parse(line))).toEqual([
      { kid: generated.kid, createdAt: generated.createdAt, revokedAt: null },
    ]);

    out.length = 0;
    await commands.get('keys revoke')!.run({ kid: generated.kid }, io);
    expect(JSON.parse(out[0]!)).toMatchObject({ kid: generated.kid, revokedAt: expect.any(String) });
    await expect(commands.get('keys revoke')!.run({}, io)).rejects.toMatchObject({ status: 400 });
    await expect(commands.get('keys revoke')!.run({ kid: 'k_unknown' }, io)).rejects.toMatchObject({
      status: 404,
      code: 'unknown_key',
    });
  });
});

describe('livetex key store (two instances on one Redis)', () => {
  let url: string;
  const prefix = uniquePrefix('livetex-keys');
  const stores: RedisStore[] = [];

  beforeAll(async () => {
    url = await getTestRedisUrl();
    for (let index = 0; index < 2; index++) {
      stores.push(await createRedisStore({ url, keyPrefix: prefix, logger: pino({ level: 'silent' }) }));
    }
  });
  afterAll(async () => {
    for (const store of stores) await store.close();
    await cleanupPrefix(url, prefix);
  });

  it('a key generated on one instance works on the other; a revocation on one is in force on the other at once', async () => {
    const one = keyStore(stores[0]!);
    const two = keyStore(stores[1]!);
    const a = await one.generate();
    const b = await one.generate();
    expect((await two.resolve(a.kid)).state).toBe('active');
    // Instance one has opened (and cached the import of) the key when the other revokes it.
    expect((await one.resolve(a.kid)).state).toBe('active');
    await two.revoke(a.kid);
    expect(await one.resolve(a.kid)).toEqual({ state: 'revoked' });
    expect((await one.resolve(b.kid)).state).toBe('active');
    expect((await two.list()).map((key) => [key.kid, key.revokedAt !== null])).toEqual(
      expect.arrayContaining([
        [a.kid, true],
        [b.kid, false],
      ]),
    );
  });
});

describe('the lookup token replay guard (jtiClaim)', () => {
  // The time check a token must pass on an instance reading `now` (codec.ts): exp > now - skew.
  const passesTimeCheck = (exp: number, skew: number, now: Date) => exp > now.getTime() / 1000 - skew;

  it('outlives the time check of an instance whose clock runs up to maxClockSkew behind the claiming one', () => {
    const skew = 30;
    const claimedAt = new Date('2026-12-03T12:00:00Z');
    const exp = claimedAt.getTime() / 1000 + 60;
    // The claiming instance's clock is 20 s ahead of the other instance's.
    const other = (at: Date) => new Date(at.getTime() - 20_000);
    const { ttlMs } = jtiClaim('app', { jti: 'j-1', exp }, skew, claimedAt);
    const keyGoneAt = new Date(claimedAt.getTime() + ttlMs);
    // When the key is gone, the slower instance must refuse the token on time alone.
    expect(passesTimeCheck(exp, skew, other(keyGoneAt))).toBe(false);
    // And the bound is not loose for nothing: at most another skew plus a second.
    expect(ttlMs).toBeLessThanOrEqual((exp + 2 * skew - claimedAt.getTime() / 1000 + 1) * 1000);
  });

  it('keys a jti by a hash, never the jti itself', () => {
    const { key } = jtiClaim('app', { jti: 'secret-jti', exp: 0 }, 30, new Date(0));
    expect(key).toMatch(/^livetex:app:jti:[A-Za-z0-9_-]+$/);
    expect(key).not.toContain('secret-jti');
  });
});
