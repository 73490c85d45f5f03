#!/usr/bin/env bash
# The Deno host's entry script: runs the planner component in Deno on the
# shared test vectors, with the Node.js host's runner, storage imports and
# helpers unchanged (../node/run.mjs and what it imports).
#
#   examples/js/deno/run.sh COMPONENT.wasm VECTORS.json
#
# Paths are taken from the current directory. Needs `npm ci` in examples/js
# (deno and jco come from npm) and Node.js for jco. Exits 0 when every case
# passed, 1 when one failed, 2 on a setup problem.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
setup() { echo "run.sh: $*" >&2; exit 2; }

[ $# -eq 2 ] || setup "usage: run.sh COMPONENT.wasm VECTORS.json"
[ -f "$1" ] || setup "the component not found at $1"
[ -f "$2" ] || setup "the vectors not found at $2"
component=$(realpath "$1")
vectors=$(realpath "$2")
deno="$root/node_modules/.bin/deno"
jco="$root/node_modules/.bin/jco"
for tool in "$deno" "$jco"; do
  [ -x "$tool" ] || setup "$tool not found: run \`npm ci --no-audit --no-fund\` in $root"
done

# jco's default output, as for Node.js: gen/planner.js imports its storage
# functions from ../../node/storage.js (relative to gen/), the module that
# run.mjs imports too, so both share one storage. The import is named without
# the WIT version (jco's planner.js imports `nodedb:wal-archiver/storage`).
gen="$here/gen"
rm -rf "$gen"
started=$(date +%s%N)
"$jco" transpile "$component" --name planner --out-dir "$gen" --quiet \
  --map 'nodedb:wal-archiver/storage=../../node/storage.js' || setup "jco could not transpile $component"
took=$(( ($(date +%s%N) - started) / 10000000 ))
printf '%s; transpiled %s in %d.%02d s\n' "$("$deno" --version | head -1)" "$component" $((took / 100)) $((took % 100))

# The files Deno may read: the module jco wrote, each core module it loads
# from disk (with the default output, planner.core.wasm only; the small ones
# are inlined), and the vectors.
readable="$gen/planner.js"
for wasm in "$gen"/*.wasm; do readable="$readable,$wasm"; done
readable="$readable,$vectors"

# Deno is sandboxed; the run needs exactly this, and is denied anything else:
#   --allow-read=gen/planner.js        run.mjs imports it dynamically (a
#                         dynamic import of a local file needs read access);
#   --allow-read=gen/planner.core.wasm jco's code takes its Node.js path in
#                         Deno (Deno sets process.versions.node) and reads the
#                         core module with node:fs rather than fetching it;
#   --allow-read=VECTORS  run.mjs reads the vectors file;
#   --allow-env=JCO_DEBUG jco's code reads process.env.JCO_DEBUG on every call
#                         into the component.
# --no-prompt fails a missing permission instead of asking. --no-config,
# --no-lock and --node-modules-dir=none are defensive: run.mjs imports only
# node: built-ins and relative files, so Deno resolves nothing from
# examples/js/package.json or node_modules (it runs the same without them),
# and with them it never will, nor write a deno.lock.
# Static imports of local modules need no permission.
exec "$deno" run --no-prompt --no-config --no-lock --node-modules-dir=none \
  --allow-read="$readable" --allow-env=JCO_DEBUG \
  "$root/node/run.mjs" "$gen" "$vectors"
