/**
 * Waits until `check` holds, polling: for outcomes another process, a queue or a timer brings
 * about. The deadline only turns a hang into an error that says what never happened; it is no
 * assertion about speed, so keep it generous (a loaded machine is slow). It is read on
 * performance.now(): some tests pin Date.now (test/crm.limiter.test.ts), and a deadline on it
 * would never come.
 */
export async function until(
  check: () => Promise<boolean> | boolean,
  what: string,
  timeoutMs = 20_000,
): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!(await check())) {
    if (performance.now() > deadline) throw new Error(`${what}: not reached within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
