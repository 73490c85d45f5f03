//! The wal-archiver planner and segment-name parser.
//!
//! Plain Rust with no I/O of its own: the host lists, uploads and deletes;
//! this crate decides what to upload, what counts as archived and what may be
//! deleted. It is compiled natively for tests and benchmarks, and to
//! `wasm32-wasip2` as the planner component.
//!
//! # Layout
//!
//! - [`name`]: strict `wal-{first:016x}-{last:016x}.seg` names, parsed and formatted.
//! - [`plan`]: scanning listings, batching, the gap-free watermark, deletion.
//! - [`cycle`]: one whole cycle driven through a [`cycle::Storage`].
//! - `bindings` (wasm only): the thin layer between the WIT world and the above.

pub mod cycle;
pub mod name;
pub mod plan;

#[cfg(target_family = "wasm")]
mod bindings;

pub use name::{format_segment_name, NameError, SegmentName};

/// A log sequence number.
pub type Lsn = u64;
