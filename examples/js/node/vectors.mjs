// The Node.js host's entry script: transpiles the component into node/gen
// with jco and runs the shared test vectors on it with run.mjs.
//
//   node examples/js/node/vectors.mjs COMPONENT.wasm VECTORS.json
//
// Paths are taken from the current directory; the script finds its own
// files wherever it is run from. Exits 0 when every case passed, 1 when one
// failed, 2 on a setup problem (arguments, files, jco not installed).

import { spawnSync } from 'node:child_process';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { SetupError, needFile, transpile } from './transpile.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const [componentArg, vectorsArg] = process.argv.slice(2);
try {
  if (!componentArg || !vectorsArg) throw new SetupError('usage: node vectors.mjs COMPONENT.wasm VECTORS.json');
  const component = resolve(componentArg);
  const vectors = resolve(vectorsArg);
  needFile('the vectors', vectors);
  const gen = join(here, 'gen');
  // jco's default output, whose storage import is this directory's storage.js
  // (the path is relative to gen/). The import is named without its WIT
  // version: jco's planner.js imports `nodedb:wal-archiver/storage`.
  const took = transpile(component, gen, ['--map', 'nodedb:wal-archiver/storage=../storage.js']);
  console.log(`node ${process.version}; transpiled ${component} in ${took.toFixed(2)} s`);
  const run = spawnSync(process.execPath, [join(here, 'run.mjs'), gen, vectors], { stdio: 'inherit' });
  process.exit(run.status ?? 2);
} catch (e) {
  if (!(e instanceof SetupError)) throw e;
  console.error(`vectors.mjs: ${e.message}`);
  process.exit(2);
}
