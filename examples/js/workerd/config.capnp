# workerd configuration: one Worker that runs the planner component
# (nodedb:wal-archiver@0.7.0) on one test vector per POST.
#
#   workerd serve config.capnp                                    # on 127.0.0.1:8787
#   workerd serve config.capnp --socket-addr http=127.0.0.1:9000  # on another port
#
# Module names mirror the paths under examples/js, so that the relative
# imports the files make of each other (worker.js imports ../node/vector.js)
# resolve in workerd as they do on disk. `embed` paths are relative to this
# file.
#
# Every core module that `jco transpile --instantiation async` writes to gen/
# must be listed below as a `wasm` module: a Worker cannot compile
# WebAssembly at run time. check.mjs refuses to start if this list and gen/
# disagree.

using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [ (name = "planner", worker = .plannerWorker) ],
  sockets = [ (name = "http", address = "127.0.0.1:8787", http = (), service = "planner") ],
);

const plannerWorker :Workerd.Worker = (
  modules = [
    (name = "workerd/worker.js", esModule = embed "worker.js"),
    (name = "workerd/plan.js", esModule = embed "plan.js"),
    (name = "workerd/storage.js", esModule = embed "storage.js"),
    (name = "node/vector.js", esModule = embed "../node/vector.js"),
    (name = "node/packed.js", esModule = embed "../node/packed.js"),
    (name = "node/storage.js", esModule = embed "../node/storage.js"),
    (name = "workerd/gen/planner.js", esModule = embed "gen/planner.js"),
    (name = "workerd/gen/planner.core.wasm", wasm = embed "gen/planner.core.wasm"),
    (name = "workerd/gen/planner.core2.wasm", wasm = embed "gen/planner.core2.wasm"),
    (name = "workerd/gen/planner.core3.wasm", wasm = embed "gen/planner.core3.wasm"),
  ],
  compatibilityDate = "2026-11-01",
);
