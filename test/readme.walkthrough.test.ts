import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/load.js';
import { defaultRegistry } from '../src/registry.js';

/**
 * What the README tells a newcomer to expect on the example config (Quick start, Console), against
 * the example config as it loads. A number the README states about the example and the example's
 * own value must not drift apart: the newcomer compares what they see with the README, not with
 * the schema.
 */
const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
/** A section's text with its line breaks as spaces (the README wraps sentences anywhere). */
const section = (from: string, to: string) =>
  readme.slice(readme.indexOf(from), readme.indexOf(to)).replace(/\s+/g, ' ');
const example = loadConfig('config/bridge.example.yaml', defaultRegistry(), {}).config;

describe('README Console, step 5: the example destination that points at nothing', () => {
  const consoleSection = section('## Console', '## Running for real');
  const destination = example.destinations.find((each) => each.id === 'example-crm')!;

  it('says how many attempts each delivery gets and how far apart, as the example has them', () => {
    // "fail within seconds" held for the first deliveries only: the circuit breaker opens after
    // five failed attempts in a row, and from then on one attempt goes out per cooldown (30 s), so
    // the Quick start's third delivery sat "pending, 0 attempts" for half a minute and a replay
    // for as long again, with nothing on the page saying why.
    const said = /Each is tried (\d+) times, (\d+) s apart/.exec(consoleSection);
    expect(said, 'README Console step 5: "Each is tried N times, M s apart"').not.toBeNull();
    expect(destination.retrySchedule).toHaveLength(Number(said![1]));
    expect(destination.retrySchedule[1]).toBe(Number(said![2]) * 1000);
  });

  it("says when the destination's circuit breaker opens and how often it then tries, as the example has it", () => {
    const said = /after (\d+) failed attempts in a row.{0,200}?one attempt goes out every (\d+) s/.exec(
      consoleSection,
    );
    expect(
      said,
      'README Console step 5: "after N failed attempts in a row … one attempt goes out every M s"',
    ).not.toBeNull();
    expect(destination.circuitBreaker.failureThreshold).toBe(Number(said![1]));
    expect(destination.circuitBreaker.cooldown).toBe(Number(said![2]) * 1000);
  });
});
