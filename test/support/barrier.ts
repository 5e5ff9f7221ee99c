/**
 * A barrier for fake servers: the requests it matches are held, none answered, until `count` of
 * them have arrived; then all go on at once (and are answered from the fake's state as it is
 * then). It makes two instances' requests overlap for certain, without a sleep: a test whose
 * second request never comes waits (and times out) instead of passing by luck.
 */
export interface RequestBarrier<Args extends unknown[]> {
  /** How many matching requests have arrived so far (at most `count`). */
  arrived(): number;
  /** Whether a request takes part: it matches and the barrier is not yet full. */
  takes(...args: Args): boolean;
  /** Hold one request (that `takes` accepted) until the barrier is full. */
  wait(): Promise<void>;
}

export function createRequestBarrier<Args extends unknown[]>(
  count: number,
  match: (...args: Args) => boolean,
): RequestBarrier<Args> {
  let arrived = 0;
  let open!: () => void;
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  return {
    arrived: () => arrived,
    takes: (...args) => arrived < count && match(...args),
    wait() {
      arrived += 1;
      if (arrived >= count) open();
      return opened;
    },
  };
}
