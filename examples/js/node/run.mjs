// Runs the planner component, transpiled by jco, on the shared test vectors
// and compares every expected value, as `run_vector` in tests/plugin.rs does.
// The same file runs in Node.js and in Deno (see ../deno/run.sh).
//
//   node run.mjs GEN_DIR VECTORS.json
//
// GEN_DIR holds jco's default output for the component, named `planner`,
// with its storage import mapped to this directory's storage.js:
//
//   jco transpile planner.wasm --name planner --out-dir GEN_DIR \
//     --map 'nodedb:wal-archiver/storage=PATH/TO/storage.js'   (relative to GEN_DIR)
//
// ./vectors.mjs does both. Prints one line per case and "N passed, M
// failed"; exits 0 when every case passed, 1 when one failed, 2 when it
// could not run (arguments, files, a component of another WIT version).

import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import process from 'node:process';
import { pathToFileURL } from 'node:url';

import { MemoryStorage, useStorage } from './storage.js';
import { compareCase, runVector } from './vector.js';

export const PLANNER = 'nodedb:wal-archiver/planner@0.7.0';

function setup(message) {
  console.error(`run.mjs: ${message}`);
  process.exit(2);
}

const [genDir, vectorsPath] = process.argv.slice(2);
if (!genDir || !vectorsPath) setup('usage: run.mjs GEN_DIR VECTORS.json');

let cases;
try {
  ({ cases } = JSON.parse(readFileSync(vectorsPath, 'utf8')));
  if (!Array.isArray(cases) || cases.length === 0) throw new Error('no "cases" array in it');
} catch (e) {
  setup(`cannot read the vectors ${vectorsPath}: ${e.message}`);
}

let gen;
try {
  gen = await import(pathToFileURL(resolve(genDir, 'planner.js')).href);
} catch (e) {
  setup(`cannot load ${resolve(genDir, 'planner.js')} (transpile the component first): ${e.message}`);
}
const planner = gen[PLANNER];
if (!planner) setup(`the component does not export ${PLANNER}; it exports ${Object.keys(gen).join(', ')}`);

// The vectors call only the pure exports; the storage imports are there, over
// an empty in-memory WAL directory and archive, but never called.
const storage = useStorage(new MemoryStorage());

let passed = 0;
let failed = 0;
const started = performance.now();
for (const c of cases) {
  let problems;
  try {
    problems = compareCase(c, runVector(planner, c));
  } catch (e) {
    problems = [`threw: ${e?.stack ?? e}`];
  }
  if (problems.length === 0) {
    passed += 1;
    console.log(`ok ${c.name}`);
  } else {
    failed += 1;
    console.log(`FAILED ${c.name}\n  ${problems.join('\n  ')}`);
  }
}
if (storage.calls.length > 0) {
  failed += 1;
  console.log(`FAILED the pure exports called storage: ${JSON.stringify(storage.calls, (_, v) => (typeof v === 'bigint' ? String(v) : v))}`);
}
console.log(`ran ${cases.length} cases in ${((performance.now() - started) / 1000).toFixed(3)} s`);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 && passed > 0 ? 0 : 1);
