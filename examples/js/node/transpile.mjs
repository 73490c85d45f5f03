// Transpiles a planner component with the jco that `npm ci` installed in
// examples/js, into a fresh directory. Used by every host's entry script.

import { execFileSync } from 'node:child_process';
import { existsSync, rmSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** examples/js, where package.json and node_modules are. */
export const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** The path of an installed tool (`jco`, `workerd`, `deno`). */
export const bin = (name) => join(root, 'node_modules', '.bin', name);

/** A problem that stops a run before it starts: exit 2. */
export class SetupError extends Error {}

/** Fails with a SetupError unless `path` is a file. */
export function needFile(what, path) {
  if (!existsSync(path) || !statSync(path).isFile()) throw new SetupError(`${what} not found at ${path}`);
}

/**
 * `jco transpile COMPONENT --name planner --out-dir OUT_DIR --quiet ...flags`,
 * after emptying OUT_DIR. Returns the seconds it took.
 */
export function transpile(component, outDir, flags = []) {
  needFile('the component', component);
  needFile('jco (run `npm ci --no-audit --no-fund` in examples/js)', bin('jco'));
  rmSync(outDir, { recursive: true, force: true });
  const started = performance.now();
  try {
    execFileSync(bin('jco'), ['transpile', component, '--name', 'planner', '--out-dir', outDir, '--quiet', ...flags], { stdio: ['ignore', 'inherit', 'inherit'] });
  } catch (e) {
    throw new SetupError(`jco could not transpile ${component} (${e.message.split('\n')[0]})`);
  }
  return (performance.now() - started) / 1000;
}
