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
//! - [`packed`]: the packed lists that cross the component boundary.
//! - [`chain`]: the one chain model: reach, breaks, shortest chains.
//! - [`plan`]: scanning listings, batching, recording, the watermark, deletion.
//! - [`cycle`]: one whole cycle driven through a [`cycle::Storage`].
//! - [`restore`]: verify, restore and prune plans over an archive listing.
//!
//! The component itself (the WIT bindings, the allocator, the panic handler)
//! is the crate in `component/`, which wraps this one: the planner is
//! compiled for speed there and the glue for size.

#![cfg_attr(target_family = "wasm", no_std)]

// Without std in the component: no libc, no stdio, no std panic machinery,
// which is most of the size of a small component.
extern crate alloc;

pub mod chain;
pub mod cycle;
pub mod name;
pub mod packed;
pub mod plan;
pub mod restore;

pub use name::{format_segment_name, NameError, SegmentName};

/// A log sequence number.
pub type Lsn = u64;
