//! The planner component: `wal-archiver-guest` behind the WIT world
//! `nodedb:wal-archiver/archiver`, with the allocator, `memcmp` and panic
//! handler that a `no_std` component needs. Built for `wasm32-wasip2` only
//! (by `host/build.rs`); on any other target this crate is empty.
//!
//! A crate of its own so that the two halves get their own optimisation:
//! the planner's loops at `opt-level = 3`, the generated lifting and
//! lowering at `"s"` (see the workspace's `profile.guest`).

#![cfg(target_family = "wasm")]
#![no_std]

extern crate alloc;

mod bindings;

#[global_allocator]
static ALLOCATOR: talc::wasm::WasmDynamicTalc = talc::wasm::new_wasm_dynamic_allocator();

/// `memcmp` for the component, which has no libc: eight bytes at a time
/// while they agree (segment names are compared often), then byte by byte
/// from there. Volatile reads in the byte loop keep the compiler from
/// turning it back into a call to `memcmp`.
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

#[unsafe(no_mangle)]
unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: the same contract as memcmp.
    unsafe { memcmp(a, b, n) }
}

/// The canonical ABI's allocator export. With std, wasi-libc provides it;
/// without, it is this, over the global allocator.
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
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    core::arch::wasm32::unreachable()
}
