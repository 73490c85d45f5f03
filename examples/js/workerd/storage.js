// The storage imports, as a Worker supplies them: the embedder's.
//
// A Worker has no filesystem: it cannot list a WAL directory, read a
// segment or delete one. Whatever the storage imports reach (a WAL directory
// on some machine, an R2 bucket) is the embedder's to provide. Here each
// request gets storage of its own, over memory (../node/storage.js), so that
// requests share no mutable state; the vectors call only the planner's pure
// exports and never reach it.
//
// `run-cycle` calls these imports synchronously, from inside the component:
// none of them may return a promise, so none can use a Worker's I/O (fetch,
// R2, KV, Durable Objects), which is all asynchronous. A Worker that drives
// a whole cycle calls the pure exports and awaits its I/O between them
// instead (see the README).

import { MemoryStorage } from '../node/storage.js';

/** Storage for one request: the six import functions, and the storage behind them. */
export function createStorage({ prefix = '' } = {}) {
  const storage = new MemoryStorage({ prefix });
  return { storage, imports: storage.imports() };
}

/**
 * The same storage with asynchronous functions, each answering after a turn
 * of the event loop, as a Worker's fetch, R2 or KV would: what `driveCycle`
 * (plan.js) takes, and what the component's `run-cycle` cannot.
 */
export function asyncStorage(imports) {
  const later = (f) => async (...args) => {
    await new Promise((ok) => setTimeout(ok, 0));
    return f(...args);
  };
  return Object.fromEntries(Object.entries(imports).map(([name, f]) => [name, later(f)]));
}
