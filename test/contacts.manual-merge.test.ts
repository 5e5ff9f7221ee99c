import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../src/cli/main.js';
import { capture } from './support/cli.js';
import { consoleRequest, signIn } from './support/console.js';
import { startTestBridge, TEST_ADMIN_TOKEN, type TestBridge } from './support/harness.js';
import { type Receiver, startReceiver } from './support/receiver.js';

/**
 * Merging two contacts by hand (POST /api/v1/contacts/:id/merge, the console's conflicts page):
 * an identity conflict staff decide. Over HTTP on loopback, on both stores; the conflict is one
 * the engine made itself (an observation naming two contacts staff had unmerged).
 */

const SECRET = `whsec_${Buffer.from('manual-merge-secret-0123456789abc').toString('base64')}`;

describe.each(['memory', 'redis'] as const)('merging contacts by hand (%s store)', (store) => {
  let receiver: Receiver;
  let bridge: TestBridge;
  let seq = 0;

  beforeAll(async () => {
    receiver = await startReceiver({ secret: SECRET });
    bridge = await startTestBridge({
      store,
      config: {
        channels: [{ id: 'web', vendor: 'jivochat', token: 'site-token-0123456789abcdef' }],
        destinations: [
          {
            id: 'crm',
            url: receiver.url,
            secret: SECRET,
            events: ['contact.merged'],
            retrySchedule: ['0s'],
            timeoutMs: 2000,
          },
        ],
        identity: { maxMergeSize: 2 },
      },
    });
  });
  afterAll(async () => {
    await bridge?.close();
    await receiver?.close();
  });

  /** A contact seen once, with these e-mails; `at` orders them (the oldest survives a merge). */
  async function seen(emails: string[], name?: string) {
    seq += 1;
    const { contact } = await bridge.bridge.context.contacts.observe({
      channelId: 'web',
      vendor: 'jivochat',
      at: new Date(Date.UTC(2026, 10, 1, 10, 0, seq)).toISOString(),
      idempotencyKey: `obs-${seq}`,
      identifiers: emails.map((value) => ({ kind: 'email', value })),
      ...(name ? { names: [name] } : {}),
    });
    return contact;
  }

  const manualMerges = (absorbed: string) =>
    receiver.application.filter(
      (event) =>
        event.payload.type === 'contact.merged' &&
        (event.payload.data.via as { kind: string }).kind === 'manual' &&
        (event.payload.data.absorbed as string[]).includes(absorbed),
    );

  it('merges two contacts, records it, sends contact.merged, and unmerge undoes it', async () => {
    const older = await seen([`a${store}@example.org`], 'Anna');
    const newer = await seen([`b${store}@example.org`], 'Anna B.');

    const merged = await bridge.admin('POST', `/api/v1/contacts/${newer.id}/merge`, { with: older.id });
    expect(merged.status).toBe(200);
    expect(merged.body.contact.id).toBe(older.id); // the older contact's id stays
    expect(merged.body.contact.records).toEqual([older.id, newer.id]);
    expect(merged.body.contact.emails.sort()).toEqual([`a${store}@example.org`, `b${store}@example.org`]);
    expect(merged.body.contact.merges).toEqual([
      expect.objectContaining({
        recordId: newer.id,
        via: { kind: 'manual', value: 'api', provenance: 'verified' },
      }),
    ]);

    // The merged-away id answers with the surviving contact.
    const read = await bridge.admin('GET', `/api/v1/contacts/${newer.id}`);
    expect(read.status).toBe(200);
    expect(read.body).toMatchObject({ id: older.id, mergedFrom: newer.id, records: [older.id, newer.id] });
    // The e-mail of the contact merged in finds the merged contact.
    const found = await bridge.admin('GET', `/api/v1/contacts?email=b${store}@example.org`);
    expect(found.body.contacts.map((contact: { id: string }) => contact.id)).toEqual([older.id]);

    // In the timeline, as an observation's merge is.
    const timeline = await bridge.admin('GET', `/api/v1/contacts/${older.id}/timeline?type=contact.merged`);
    expect(timeline.body.entries).toEqual([
      expect.objectContaining({
        type: 'contact.merged',
        data: expect.objectContaining({ survivor: older.id, absorbed: [newer.id] }),
      }),
    ]);

    // The same outbound event a merge by a chat sends.
    await receiver.waitFor(() => manualMerges(newer.id).length === 1, 5000, 'contact.merged delivered');
    const event = manualMerges(newer.id)[0]!.payload;
    expect(event.contact?.id).toBe(older.id);
    expect(event.data).toMatchObject({ survivor: older.id, absorbed: [newer.id] });

    // Undone by the existing unmerge: two contacts again.
    const unmerged = await bridge.admin('POST', `/api/v1/contacts/${older.id}/unmerge`, {
      recordId: newer.id,
    });
    expect(unmerged.status).toBe(200);
    expect(unmerged.body.contact.records).toEqual([older.id]);
    expect(unmerged.body.split.id).toBe(newer.id);
    const back = await bridge.admin('GET', `/api/v1/contacts/${newer.id}`);
    expect(back.body.id).toBe(newer.id);
    expect(back.body.mergedFrom).toBeUndefined();
    expect((await bridge.admin('GET', `/api/v1/contacts/${older.id}`)).body.records).toEqual([older.id]);
  });

  it('refuses the same contact, an unknown id, a body without "with", and a merge over maxMergeSize', async () => {
    const one = await seen([`c${store}@example.org`]);
    const two = await seen([`d${store}@example.org`]);
    const third = await seen([`e${store}@example.org`]);

    const self = await bridge.admin('POST', `/api/v1/contacts/${one.id}/merge`, { with: one.id });
    expect(self.status).toBe(409);
    expect(self.body.error.code).toBe('same_contact');

    const unknown = await bridge.admin('POST', `/api/v1/contacts/${one.id}/merge`, { with: 'c_nosuch' });
    expect(unknown.status).toBe(404);
    expect(unknown.body.error).toMatchObject({ code: 'contact_not_found', message: 'no contact c_nosuch' });
    const unknownFirst = await bridge.admin('POST', '/api/v1/contacts/c_nosuch2/merge', { with: one.id });
    expect(unknownFirst.status).toBe(404);
    expect(unknownFirst.body.error.message).toBe('no contact c_nosuch2');

    for (const body of [{}, { with: '' }, { with: two.id, force: true }]) {
      const bad = await bridge.admin('POST', `/api/v1/contacts/${one.id}/merge`, body);
      expect(bad.status).toBe(400);
      expect(bad.body.error.code).toBe('invalid_body');
    }

    // Two records now (maxMergeSize 2): one more would be three.
    expect((await bridge.admin('POST', `/api/v1/contacts/${one.id}/merge`, { with: two.id })).status).toBe(
      200,
    );
    // Already one contact, named by the merged-away id.
    const again = await bridge.admin('POST', `/api/v1/contacts/${two.id}/merge`, { with: one.id });
    expect(again.status).toBe(409);
    expect(again.body.error.code).toBe('same_contact');

    const tooLarge = await bridge.admin('POST', `/api/v1/contacts/${third.id}/merge`, { with: two.id });
    expect(tooLarge.status).toBe(409);
    expect(tooLarge.body.error.code).toBe('too_large');
    expect((await bridge.admin('GET', `/api/v1/contacts/${third.id}`)).body.records).toEqual([third.id]);
    expect((await bridge.admin('GET', `/api/v1/contacts/${one.id}`)).body.records).toEqual([one.id, two.id]);
  });

  it('lists a conflict in the console and merges it from there, over an earlier unmerge', async () => {
    const older = await seen([`f${store}@example.org`], 'Fyodor <script>alert(1)</script>');
    const newer = await seen([`g${store}@example.org`]);
    // A chat names both: merged; staff split them; a later chat names both again: refused, listed.
    await seen([`f${store}@example.org`, `g${store}@example.org`]);
    expect((await bridge.admin('GET', `/api/v1/contacts/${newer.id}`)).body.id).toBe(older.id);
    expect(
      (await bridge.admin('POST', `/api/v1/contacts/${older.id}/unmerge`, { recordId: newer.id })).status,
    ).toBe(200);
    await seen([`f${store}@example.org`, `g${store}@example.org`]);
    const conflicts = (await bridge.admin('GET', '/api/v1/identity/conflicts')).body.conflicts;
    expect(conflicts[0]).toMatchObject({
      reason: 'unmerged_before',
      roots: expect.arrayContaining([older.id, newer.id]),
    });
    expect((await bridge.admin('GET', `/api/v1/contacts/${newer.id}`)).body.id).toBe(newer.id);

    const { cookie, csrf } = await signIn(bridge.url, TEST_ADMIN_TOKEN);
    const page = await consoleRequest(bridge.url, '/console/conflicts', { cookie });
    expect(page.status).toBe(200);
    expect(page.text).toContain('<a href="/console/conflicts" aria-current="page">Conflicts</a>');
    expect(page.text).toContain('unmerged_before');
    expect(page.text).toContain(`href="/console/contacts/${older.id}"`);
    expect(page.text).toContain(`href="/console/contacts/${newer.id}"`);
    // Customer text is escaped, as everywhere in the console.
    expect(page.text).toContain('Fyodor &lt;script&gt;alert(1)&lt;/script&gt;');
    expect(page.text).not.toContain('<script>alert(1)');
    // The Merge form asks first (console.js reads data-confirm), like every other lasting action.
    const [first, second] = conflicts[0].roots as string[];
    const form = new RegExp(
      `<form method="post" action="/console/conflicts/merge" class="inline" data-confirm="[^"]+">` +
        `<input type="hidden" name="_csrf" value="[^"]+"><input type="hidden" name="id" value="${first}">` +
        `<input type="hidden" name="with" value="${second}">`,
    );
    expect(page.text).toMatch(form);
    // Every other page links to it.
    const contacts = await consoleRequest(bridge.url, '/console/contacts', { cookie });
    expect(contacts.text).toContain('<a href="/console/conflicts">Conflicts</a>');

    const refused = await consoleRequest(bridge.url, '/console/conflicts/merge', {
      cookie,
      form: { id: first!, with: second! },
    });
    expect(refused.status).toBe(403);
    expect((await bridge.admin('GET', `/api/v1/contacts/${newer.id}`)).body.id).toBe(newer.id);

    const done = await consoleRequest(bridge.url, '/console/conflicts/merge', {
      cookie,
      form: { _csrf: csrf, id: first!, with: second! },
    });
    expect(done.status).toBe(302);
    expect(done.location).toBe(`/console/contacts/${older.id}?notice=merged`);
    const after = await consoleRequest(bridge.url, done.location!, { cookie });
    expect(after.text).toContain('Merged: the two contacts are one now.');
    expect(after.text).toContain('merged by hand (<bdi class="mono">console</bdi>)');
    const read = await bridge.admin('GET', `/api/v1/contacts/${newer.id}`);
    expect(read.body).toMatchObject({ id: older.id, mergedFrom: newer.id });

    // The conflict is kept (it is history), decided now: not among the open ones the page lists
    // first; among all of them, without a Merge button, saying it was merged by hand.
    const open = await consoleRequest(bridge.url, '/console/conflicts', { cookie });
    expect(open.text).not.toContain(`href="/console/contacts/${newer.id}"`);
    const listed = await consoleRequest(bridge.url, '/console/conflicts?state=all', { cookie });
    expect(listed.text).not.toMatch(form);
    expect(listed.text).toContain(`(now part of ${older.id})`);
    expect(listed.text).toContain('<span class="state state-merged">Merged by hand</span>');
  });

  it('pages the conflicts with the cursor', async () => {
    // Three contacts, each record alone; one chat naming all three is over maxMergeSize (2).
    const emails = ['h', 'i', 'j'].map((letter) => `${letter}${store}@example.org`);
    for (const email of emails) await seen([email]);
    const total = (await bridge.admin('GET', '/api/v1/identity/conflicts?limit=500')).body.conflicts.length;
    for (let i = 0; i < 51 - Math.min(51, total); i++) await seen(emails);
    const { cookie } = await signIn(bridge.url, TEST_ADMIN_TOKEN);
    // Every state (one conflict of the test above was merged by hand since): the filter stays on.
    const page = await consoleRequest(bridge.url, '/console/conflicts?state=all', { cookie });
    expect(page.text.match(/<li class="entry">/g)).toHaveLength(50);
    const older = /<a class="button" href="([^"]+)">Older conflicts<\/a>/.exec(page.text)?.[1];
    expect(older).toContain('state=all');
    const next = await consoleRequest(bridge.url, older!.replaceAll('&amp;', '&'), { cookie });
    expect(next.status).toBe(200);
    expect(next.text.match(/<li class="entry">/g)?.length).toBeGreaterThanOrEqual(1);
    expect(next.text).toContain('<a href="/console/conflicts?state=all">Newest conflicts</a>');
    const bad = await consoleRequest(bridge.url, '/console/conflicts?before=nonsense', { cookie });
    expect(bad.status).toBe(400);
  });
});

describe('chatbridge contacts merge', () => {
  let bridge: TestBridge;
  afterAll(async () => {
    await bridge?.close();
  });

  it('merges two contacts of the shared store and prints the merged contact; says why it cannot', async () => {
    bridge = await startTestBridge({
      store: 'redis',
      start: false,
      config: { channels: [{ id: 'web', vendor: 'jivochat', token: 'site-token-0123456789abcdef' }] },
    });
    const observe = (key: string, email: string, at: string) =>
      bridge.bridge.context.contacts.observe({
        channelId: 'web',
        vendor: 'jivochat',
        at,
        idempotencyKey: key,
        identifiers: [{ kind: 'email', value: email }],
      });
    const one = (await observe('one', 'cli-one@example.org', '2026-11-01T10:00:00.000Z')).contact;
    const two = (await observe('two', 'cli-two@example.org', '2026-11-01T11:00:00.000Z')).contact;
    const file = join(mkdtempSync(join(tmpdir(), 'chatbridge-merge-')), 'bridge.yaml');
    writeFileSync(
      file,
      `admin: { token: a-long-enough-admin-token }\nstore: { redis: "${bridge.redisUrl}", keyPrefix: "${bridge.keyPrefix}" }\nlog: { level: silent }\n`,
    );

    const missing = capture();
    expect(await runCli(['contacts', 'merge', one.id, '--config', file], missing.io)).toBe(2);
    expect(missing.err[0]).toBe("chatbridge: 'contacts merge' takes ID OTHER_ID (got 1 operand)");

    const unknown = capture();
    expect(await runCli(['contacts', 'merge', one.id, 'c_nosuch', '--config', file], unknown.io)).toBe(1);
    expect(unknown.err).toEqual(['chatbridge: no contact c_nosuch']);

    const run = capture();
    expect(await runCli(['contacts', 'merge', two.id, one.id, '--config', file], run.io)).toBe(0);
    expect(run.out).toHaveLength(1);
    const printed = JSON.parse(run.out[0]!);
    expect(printed.contact).toMatchObject({ id: one.id, records: [one.id, two.id] });
    expect(printed.contact.merges[0].via).toEqual({ kind: 'manual', value: 'cli', provenance: 'verified' });
    expect((await bridge.bridge.context.contacts.get(two.id))?.contact.id).toBe(one.id);

    const again = capture();
    expect(await runCli(['contacts', 'merge', one.id, two.id, '--config', file], again.io)).toBe(1);
    expect(again.err[0]).toContain('are the same contact');

    const help = capture();
    expect(await runCli(['contacts', 'merge', '--help'], help.io)).toBe(0);
    expect(help.out[0]!.split('\n')[0]).toBe('Usage: chatbridge contacts merge ID OTHER_ID [--config FILE]');
  });
});
