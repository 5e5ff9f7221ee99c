/** A signal that aborts when any of its sources does, and lets go of its sources when disposed. */
export interface CombinedSignal {
  readonly signal: AbortSignal;
  /** Detach from the sources (call it in a finally once the work is done); safe to call twice. */
  dispose(): void;
}

/**
 * AbortSignal.any by hand. On Node 20 (measured on 20.20.2) AbortSignal.any keeps a record of
 * every signal it makes in each source signal, for as long as the source lives, even after the
 * combined signal is collected: combining a long-lived signal (the delivery shutdown signal, the
 * scheduler's stop signal) with a per-request one grew the heap by ~60 bytes a combination,
 * without end (≈ 47 MiB after 800,000 sends). Here the sources hold one listener each, removed
 * by dispose(), so nothing outlives the work it was for.
 */
export function combineSignals(sources: readonly AbortSignal[]): CombinedSignal {
  const controller = new AbortController();
  const aborted = sources.find((source) => source.aborted);
  if (aborted) {
    controller.abort(aborted.reason);
    return { signal: controller.signal, dispose: () => {} };
  }
  const onAbort = (event: Event) => {
    dispose();
    controller.abort((event.target as AbortSignal).reason);
  };
  const dispose = () => {
    for (const source of sources) source.removeEventListener('abort', onAbort);
  };
  for (const source of sources) source.addEventListener('abort', onAbort);
  return { signal: controller.signal, dispose };
}
