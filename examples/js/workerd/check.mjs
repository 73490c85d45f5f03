// The workerd host's entry script: runs the planner component in a Worker
// served by workerd and checks it against the shared test vectors.
//
//   node examples/js/workerd/check.mjs COMPONENT.wasm VECTORS.json
//
// Transpiles COMPONENT into workerd/gen with `jco --instantiation async`,
// starts workerd on 127.0.0.1 (on a free port, or $PORT), posts every case
// of VECTORS, compares every expected key of each with what the Worker got
// (as ../node/run.mjs does), stops workerd, and prints "N passed, M failed".
// Paths are taken from the current directory. Exits 0 when every case
// passed, 1 when one failed, 2 on a setup problem (arguments, files, tools,
// config.capnp and gen/ disagreeing, workerd not serving).

import { execFileSync, spawn } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isDeepStrictEqual } from 'node:util';

import { SetupError, bin, needFile, transpile } from '../node/transpile.mjs';
import { compareCase } from '../node/vector.js';

const here = dirname(fileURLToPath(import.meta.url));
const seconds = (since) => ((performance.now() - since) / 1000).toFixed(2);

let workerd;
let exited = null;
let log = '';

/** Stops workerd (SIGTERM, then SIGKILL after 5 s) if it runs. */
async function stop() {
  if (!workerd || exited !== null) return;
  const gone = new Promise((ok) => workerd.once('exit', ok));
  workerd.kill('SIGTERM');
  const timer = setTimeout(() => workerd.kill('SIGKILL'), 5000);
  await gone;
  clearTimeout(timer);
}

async function freePort() {
  const server = createServer();
  await new Promise((ok, fail) => server.once('error', fail).listen(0, '127.0.0.1', ok));
  const { port } = server.address();
  await new Promise((ok) => server.close(ok));
  return port;
}

async function main() {
  const [componentArg, vectorsArg] = process.argv.slice(2);
  if (!componentArg || !vectorsArg) throw new SetupError('usage: node check.mjs COMPONENT.wasm VECTORS.json');
  const component = resolve(componentArg);
  const vectorsPath = resolve(vectorsArg);
  needFile('the vectors', vectorsPath);
  needFile('workerd (run `npm ci --no-audit --no-fund` in examples/js)', bin('workerd'));
  let cases;
  try {
    ({ cases } = JSON.parse(readFileSync(vectorsPath, 'utf8')));
    if (!Array.isArray(cases) || cases.length === 0) throw new Error('no "cases" array in it');
  } catch (e) {
    throw new SetupError(`cannot read the vectors ${vectorsPath}: ${e.message}`);
  }

  // 1. Transpile, leaving loading the core modules to the Worker.
  const gen = join(here, 'gen');
  const took = transpile(component, gen, ['--instantiation', 'async']);
  console.log(`transpiled ${component} in ${took.toFixed(2)} s`);

  // 2. Every core module jco wrote must be a wasm module of the Worker, and no other.
  const written = readdirSync(gen).filter((f) => f.endsWith('.wasm')).sort();
  const capnp = readFileSync(join(here, 'config.capnp'), 'utf8').replace(/#.*$/gm, '');
  const declared = [...capnp.matchAll(/wasm\s*=\s*embed\s*"gen\/([^"]+)"/g)].map((m) => m[1]).sort();
  if (!isDeepStrictEqual(written, declared)) {
    throw new SetupError(`config.capnp declares the wasm modules ${JSON.stringify(declared)}, jco wrote ${JSON.stringify(written)}: make them agree`);
  }

  // 3. Start workerd on 127.0.0.1; ready when GET / answers (at most 20 s).
  const port = Number(process.env.PORT ?? (await freePort()));
  const base = `http://127.0.0.1:${port}/`;
  let started = performance.now();
  workerd = spawn(bin('workerd'), ['serve', join(here, 'config.capnp'), '--socket-addr', `http=127.0.0.1:${port}`], {
    cwd: here,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  workerd.stdout.on('data', (d) => (log += d));
  workerd.stderr.on('data', (d) => (log += d));
  workerd.once('exit', (code, signal) => (exited = signal ?? code));
  for (let tries = 0; ; tries++) {
    if (exited !== null) throw new SetupError(`workerd exited (${exited}) before it served:\n${log}`);
    try {
      const res = await fetch(base, { signal: AbortSignal.timeout(1000) });
      if (res.ok) break;
      throw new SetupError(`GET / answered ${res.status}:\n${log}`);
    } catch (e) {
      if (e instanceof SetupError) throw e;
      if (tries >= 400) throw new SetupError(`workerd did not answer on ${base} within 20 s:\n${log}`);
      await new Promise((ok) => setTimeout(ok, 50));
    }
  }
  const version = execFileSync(bin('workerd'), ['--version']).toString().trim();
  console.log(`${version} serving on ${base} after ${seconds(started)} s`);

  // 4. Post every case; compare every expected key.
  let passed = 0;
  let failed = 0;
  started = performance.now();
  for (const c of cases) {
    let problems;
    try {
      const res = await fetch(base, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(c),
        signal: AbortSignal.timeout(10000),
      });
      const got = await res.json();
      if (got?.wrong_planner) throw new SetupError(got.error);
      problems = res.ok ? compareCase(c, got) : [`HTTP ${res.status}: ${got.error ?? JSON.stringify(got)}`];
    } catch (e) {
      if (e instanceof SetupError) throw e;
      problems = [`request failed: ${e.message}`];
    }
    if (problems.length === 0) {
      passed += 1;
      console.log(`ok ${c.name}`);
    } else {
      failed += 1;
      console.log(`FAILED ${c.name}\n  ${problems.join('\n  ')}`);
    }
  }
  const posted = seconds(started);
  await stop();
  if (failed > 0 && log) console.error(`workerd said:\n${log}`);
  console.log(`posted ${cases.length} cases in ${posted} s`);
  console.log(`${passed} passed, ${failed} failed`);
  return failed === 0 && passed > 0 ? 0 : 1;
}

let code;
try {
  code = await main();
} catch (e) {
  await stop();
  if (!(e instanceof SetupError)) throw e;
  console.error(`check.mjs: ${e.message}`);
  code = 2;
}
process.exit(code);
