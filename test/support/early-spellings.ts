import { expect } from 'vitest';
import type { TestBridge } from './harness.js';
import { postWithoutHost } from './raw-http.js';

/**
 * Checks both early-path tests (webhooks and lookups) make of their three spellings of one
 * route: the plain path served ahead of Koa, `?via=chain` through the middleware chain, and an
 * escaped one through the router. Each must answer as the others do.
 */

/** An HTTP/1.1 POST without Host at every spelling: the same 400 missing_host. */
export async function expectMissingHostAlike(
  bridge: TestBridge,
  spellings: readonly string[],
): Promise<void> {
  const answers = [];
  for (const path of spellings) answers.push(await postWithoutHost(bridge, path));
  expect(answers[0]).toEqual({
    status: 'HTTP/1.1 400',
    body: { error: expect.objectContaining({ code: 'missing_host' }) },
  });
  for (const answer of answers.slice(1)) expect(answer).toEqual(answers[0]);
}

/** GET, PUT, HEAD and OPTIONS at every spelling: 404 each. */
export async function expectWrongMethod404(bridge: TestBridge, spellings: readonly string[]): Promise<void> {
  for (const method of ['GET', 'PUT', 'HEAD', 'OPTIONS']) {
    const statuses = [];
    for (const path of spellings) statuses.push((await fetch(`${bridge.url}${path}`, { method })).status);
    expect(statuses).toEqual(spellings.map(() => 404));
  }
}
