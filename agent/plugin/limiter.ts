// Bounded claim work: at most `concurrency` claims are worked on at once across every kubelet
// call, and at most `maxQueued` wait. A flood of claims then queues behind a small window instead
// of starting thousands of store reads and checkpoint writes at once, and the event loop stays
// free for the kubelet's liveness probe (an empty NodePrepareResources, which does no claim work).

export interface Limiter {
  /** Runs fn when a slot is free. */
  run<T>(fn: () => Promise<T>): Promise<T>;
  /** Whether `n` more claims may queue now. */
  admits(n: number): boolean;
  /** Claims running or waiting. */
  pending(): number;
}

export function createLimiter(concurrency: number, maxQueued: number): Limiter {
  let running = 0;
  const waiting: (() => void)[] = [];
  const release = (): void => {
    running--;
    const next = waiting.shift();
    if (next) next();
  };
  return {
    admits: (n) => waiting.length + running + n <= concurrency + maxQueued,
    pending: () => running + waiting.length,
    async run(fn) {
      if (running >= concurrency) await new Promise<void>((resolve) => waiting.push(resolve));
      running++;
      try {
        return await fn();
      } finally {
        release();
      }
    },
  };
}
