/**
 * Keep a store lock alive while work runs under it: `renew` every third of `ttlMs` (so two
 * renewals can fail or be late before the lock expires). When a renewal answers false the lock is
 * gone (it expired and may be someone else's now): `onLost` is called once and renewing stops.
 * A renewal that throws (the store unreachable) goes to `onError` and is tried again next time.
 * Returns stop(). The timer does not keep the process alive.
 */
export function renewWhileHeld(options: {
  ttlMs: number;
  renew: () => Promise<boolean>;
  onLost: () => void;
  onError?: (error: unknown) => void;
}): () => void {
  let stopped = false;
  const stop = () => {
    stopped = true;
    clearInterval(timer);
  };
  const tick = async () => {
    try {
      const held = await options.renew();
      if (!held && !stopped) {
        stop();
        options.onLost();
      }
    } catch (error) {
      if (!stopped) options.onError?.(error);
    }
  };
  const timer = setInterval(() => void tick(), Math.max(1, Math.floor(options.ttlMs / 3)));
  timer.unref();
  return stop;
}
