// A Worker that runs the planner component on the shared test vectors.
//
//   POST /   body: one case of tests/testdata/plans.json
//            answer: 200 and what the planner got, keyed as the case's
//            `expected` is (LSNs as decimal strings), for the caller to compare
//   GET  /   a line saying so
//
// gen/ holds `jco transpile planner.wasm --name planner --instantiation async`.
// jco's default output cannot start in a Worker: it finds its core module
// with `new URL(..., import.meta.url)` (undefined in workerd) and compiles two
// small core modules from base64 at run time ("Wasm code generation
// disallowed by embedder"). With --instantiation, loading the core modules
// is ours: config.capnp declares each as a `wasm` module, which workerd
// compiles when it loads the Worker and hands over as a WebAssembly.Module.

import { instantiate } from './gen/planner.js';
import { BadRequest, WrongPlanner, instantiatePlanner, planCase } from './plan.js';

/** The core module jco named `name`, as workerd compiled it. */
async function getCoreModule(name) {
  try {
    return (await import(`./gen/${name}`)).default;
  } catch (e) {
    throw new WrongPlanner(`core module gen/${name} is not declared as a wasm module in config.capnp (${e.message})`);
  }
}

function json(status, value) {
  return new Response(JSON.stringify(value), { status, headers: { 'content-type': 'application/json' } });
}

export default {
  async fetch(request) {
    if (request.method === 'GET') {
      return new Response('wal-archiver planner (nodedb:wal-archiver@0.7.0): POST one case of tests/testdata/plans.json to get what the planner makes of it\n');
    }
    if (request.method !== 'POST') return json(405, { error: 'use POST' });
    let body;
    try {
      body = await request.json();
    } catch (e) {
      return json(400, { error: `the body is not JSON: ${e.message}` });
    }
    try {
      const got = await planCase(body, (imports) => instantiatePlanner(instantiate, getCoreModule, imports));
      return json(200, got);
    } catch (e) {
      if (e instanceof BadRequest) return json(400, { error: e.message });
      if (e instanceof WrongPlanner) return json(500, { error: e.message, wrong_planner: true });
      // A trap or a bug: say what it was, as a host would log it.
      return json(500, { error: `the planner failed: ${e?.stack ?? e}` });
    }
  },
};
