//! The wal-archiver host: runs the planner component in wasmtime and carries
//! out its decisions with object_store.
//!
//! # Layout
//!
//! - [`bindings`]: the WIT world as wasmtime generates it, and its packed lists.
//! - [`component`]: the engine, the embedded component, sandboxed sessions.
//! - [`imports`]: the `storage` imports, a thin adapter over [`storage`].
//! - [`cache`]: compiled components kept on disk between starts.
//! - [`wal`]: the confined WAL directory, read through measured descriptors.
//! - [`compress`]: zstd for segments on their way in and out.
//! - [`store`]: the archive, on a local backend of our own or on object_store.
//! - [`storage`]: the two together, and their errors.
//! - [`lock`]: one archiver per WAL directory.
//! - [`archive`]: the loop that lists, asks the planner, uploads, records, deletes.
//! - [`restore`]: verify, restore to an LSN, prune.
//! - [`metrics`]: Prometheus metrics and `/healthz` for a running archiver.
//! - [`state`]: the state file, written atomically.
//! - [`config`]: the TOML config file.
//! - [`generate`]: sample segments.
//! - [`lsn`]: LSN arguments.
//! - [`size`]: byte sizes in settings.
//!
//! The `wal-archiver` binary in `main.rs` is the command line over these.

pub mod archive;
pub mod bindings;
pub mod cache;
pub mod component;
pub mod compress;
pub mod config;
pub mod generate;
pub mod imports;
pub mod lock;
pub mod lsn;
pub mod metrics;
pub mod restore;
pub mod size;
pub mod state;
pub mod storage;
pub mod store;
pub mod wal;
