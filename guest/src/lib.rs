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
//! - `bindings` (wasm only): the thin layer between the WIT world and the above.

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

#[cfg(target_family = "wasm")]
mod bindings;

#[cfg(target_family = "wasm")]
#[global_allocator]
static ALLOCATOR: talc::wasm::WasmDynamicTalc = talc::wasm::new_wasm_dynamic_allocator();

/// `memcmp` for the component, which has no libc: eight bytes at a time
/// while they agree (segment names are compared often), then byte by byte
/// from there. Volatile reads in the byte loop keep the compiler from
/// turning it back into a call to `memcmp`.
#[cfg(target_family = "wasm")]
#[unsafe(no_mangle)]
unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut start = 0;
    while start + 8 <= n {
        // SAFETY: the caller passes two readable regions of `n` bytes, and
        // wasm loads need no alignment.
        let (x, y) = unsafe { (a.add(start).cast::<u64>().read_unaligned(), b.add(start).cast::<u64>().read_unaligned()) };
        if x != y {
            break;
        }
        start += 8;
    }
    for i in start..n {
        // SAFETY: the caller passes two readable regions of `n` bytes.
        let (x, y) = unsafe { (a.add(i).read_volatile(), b.add(i).read_volatile()) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
    }
    0
}

#[cfg(target_family = "wasm")]
#[unsafe(no_mangle)]
unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: the same contract as memcmp.
    unsafe { memcmp(a, b, n) }
}

/// The canonical ABI's allocator export. With std, wasi-libc provides it;
/// without, it is this, over the global allocator.
#[cfg(target_family = "wasm")]
#[unsafe(no_mangle)]
unsafe extern "C" fn cabi_realloc(old_ptr: *mut u8, old_len: usize, align: usize, new_len: usize) -> *mut u8 {
    use alloc::alloc::{alloc, realloc, Layout};
    if new_len == 0 {
        return align as *mut u8;
    }
    // SAFETY: the canonical ABI passes a power-of-two alignment, and the old
    // pointer and length of a block this function returned.
    let ptr = unsafe {
        if old_len == 0 {
            alloc(Layout::from_size_align_unchecked(new_len, align))
        } else {
            realloc(old_ptr, Layout::from_size_align_unchecked(old_len, align), new_len)
        }
    };
    if ptr.is_null() {
        core::arch::wasm32::unreachable();
    }
    ptr
}

/// The planner never panics on any input (the fuzz targets check it); if it
/// did, the host sees a trap and fails that call only.
#[cfg(target_family = "wasm")]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    core::arch::wasm32::unreachable()
}

pub use name::{format_segment_name, NameError, SegmentName};

/// A log sequence number.
pub type Lsn = u64;
