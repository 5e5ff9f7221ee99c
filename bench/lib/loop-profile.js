import { writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { resolve } from 'node:path';

/**
 * The in-process loops' LOOP_PROFILE: a V8 CPU profile of what `run` does, sampled every 100 µs
 * (finer than the default 1 ms: a loop's request is tens of µs), written to a temporary file whose
 * path goes to stdout (read it with `node bench/profile.js <file>`). Set up before `run` and the
 * input built beforehand, so neither is in the profile.
 */
export async function writeLoopProfile(name, run) {
  const { Session } = await import('node:inspector/promises');
  const session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.setSamplingInterval', { interval: 100 });
  await session.post('Profiler.start');
  await run();
  const { profile } = await session.post('Profiler.stop');
  session.disconnect();
  const file = resolve(tmpdir(), `${name}-${Date.now()}.cpuprofile`);
  writeFileSync(file, JSON.stringify(profile));
  process.stdout.write(`${file}\n`);
}
