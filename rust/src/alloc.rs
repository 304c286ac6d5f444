//! mimalloc as the global allocator, through its C API.
//!
//! The `mimalloc` crate's `GlobalAlloc` calls `mi_malloc_aligned` for every layout. mimalloc
//! serves that from its fast path only for blocks of at most 1 KiB; anything larger (hyper's
//! 8 KiB read buffers, boxed futures) goes to the generic aligned path and, unless the size is
//! a power of two, to an over-allocation: 3.8 times and ~1,100 instructions per proxied
//! request (callgrind, bench/README.md "Profiles"). Like std's `System` allocator, layouts
//! whose alignment plain `mi_malloc` already guarantees (16 bytes, and not above the size) go
//! to the plain calls; only larger alignments take the aligned ones.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as ffi;

/// What `mi_malloc` guarantees for any block of at least that size (`MI_MAX_ALIGN_SIZE`).
const MIN_ALIGN: usize = 16;

pub struct MiMalloc;

fn plain(align: usize, size: usize) -> bool {
    align <= MIN_ALIGN && align <= size
}

// SAFETY: every block comes from mimalloc and goes back to `mi_free`, which takes blocks of
// the plain and the aligned calls alike; the alignment asked for is met by either call.
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if plain(layout.align(), layout.size()) {
            ffi::mi_malloc(layout.size()).cast()
        } else {
            ffi::mi_malloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if plain(layout.align(), layout.size()) {
            ffi::mi_zalloc(layout.size()).cast()
        } else {
            ffi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        ffi::mi_free(ptr.cast::<c_void>());
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if plain(layout.align(), new_size) {
            ffi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
        } else {
            ffi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every size and alignment a Rust program asks for comes back aligned, both paths.
    #[test]
    fn blocks_are_aligned_for_every_layout() {
        let a = MiMalloc;
        for size in [1, 7, 8, 15, 16, 24, 100, 1024, 1500, 8192, 9000, 1 << 20] {
            for align in [1, 2, 8, 16, 32, 64, 128, 4096] {
                let layout = Layout::from_size_align(size, align).unwrap();
                unsafe {
                    let p = a.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "alloc {size}/{align}");
                    p.write_bytes(0xab, size);
                    let p = a.realloc(p, layout, size * 3);
                    assert_eq!(p as usize % align, 0, "realloc {size}/{align}");
                    assert_eq!(*p.add(size - 1), 0xab);
                    a.dealloc(p, Layout::from_size_align(size * 3, align).unwrap());
                    let z = a.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0, "zalloc {size}/{align}");
                    assert!((0..size).all(|i| *z.add(i) == 0));
                    a.dealloc(z, layout);
                }
            }
        }
    }
}
