//! The wal-archiver host: runs the planner component in wasmtime and carries
//! out its decisions with object_store.
//!
//! # Layout
//!
//! - [`component`]: the engine, the embedded component, sandboxed sessions.
//! - [`cache`]: compiled components kept on disk between starts.
//! - [`storage`]: the confined WAL directory and the archive destination.
//! - [`archive`]: the loop that lists, asks the planner, uploads, records, deletes.
//! - [`restore`]: verify, restore to an LSN, prune.
//! - [`state`]: the state file, written atomically.
//! - [`config`]: the TOML config file.
//! - [`generate`]: sample segments.
//! - [`lsn`]: LSN arguments.
//!
//! The `wal-archiver` binary in `main.rs` is the command line over these.

pub mod archive;
pub mod cache;
pub mod component;
pub mod config;
pub mod generate;
pub mod lsn;
pub mod restore;
pub mod state;
pub mod storage;
