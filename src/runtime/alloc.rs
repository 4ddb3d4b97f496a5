//! Global allocator: mimalloc, with very large requests mapped lazily.
//!
//! The Kafka codec pre-sizes arrays from the length a client sends. A 20-byte frame can
//! claim two billion elements, and with the kernel's default overcommit heuristic such an
//! allocation fails and Rust aborts the process. Requests at or above
//! [`LAZY_MAPPING_THRESHOLD`] therefore get an anonymous `MAP_NORESERVE` mapping: address
//! space only, backed page by page as it is touched, so a lying length costs nothing and
//! the decoder fails cleanly on the bytes that are not there.

use std::alloc::{GlobalAlloc, Layout};

use mimalloc::MiMalloc;

/// Allocations this large bypass mimalloc (larger than any buffer kopd sizes itself).
pub const LAZY_MAPPING_THRESHOLD: usize = 1 << 30;

pub struct KopdAllocator;

/// Opts the process out of transparent huge pages (`PR_SET_THP_DISABLE`; the kernel checks
/// it at every fault, so it covers mappings made before the call too).
///
/// Why: the allocator returns freed 64 KiB slices to the kernel (`MADV_DONTNEED`) about a
/// second after they go idle; with THP the next touch of such a range faults in and zeroes a
/// whole 2 MiB page. Under a steady produce load (entries churning through the tail cache)
/// that zeroing was a fifth of kopd's CPU time. Not applied by default (`memory.transparent.huge.pages`):
/// reads from disk were faster with huge pages.
pub fn disable_transparent_huge_pages() -> std::io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    let r = unsafe {
        libc::prctl(
            libc::PR_SET_THP_DISABLE,
            1 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if r == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

const PAGE: usize = 4096;

fn lazy_mappable(layout: Layout) -> bool {
    layout.size() >= LAZY_MAPPING_THRESHOLD && layout.align() <= PAGE
}

unsafe fn map_lazily(size: usize) -> *mut u8 {
    // SAFETY: anonymous private mapping; no file descriptor or existing memory involved.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED { std::ptr::null_mut() } else { ptr.cast() }
}

unsafe impl GlobalAlloc for KopdAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if lazy_mappable(layout) { unsafe { map_lazily(layout.size()) } } else { unsafe { MiMalloc.alloc(layout) } }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if lazy_mappable(layout) {
            // Fresh anonymous pages are already zero.
            unsafe { map_lazily(layout.size()) }
        } else {
            unsafe { MiMalloc.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if lazy_mappable(layout) {
            // SAFETY: `ptr` came from `map_lazily` with this exact size.
            unsafe { libc::munmap(ptr.cast(), layout.size()) };
        } else {
            unsafe { MiMalloc.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new_layout = match Layout::from_size_align(new_size, layout.align()) {
            Ok(l) => l,
            Err(_) => return std::ptr::null_mut(),
        };
        if !lazy_mappable(layout) && !lazy_mappable(new_layout) {
            return unsafe { MiMalloc.realloc(ptr, layout, new_size) };
        }
        // Crossing the threshold (either way) or resizing a mapping: move the bytes.
        let new_ptr = unsafe { self.alloc(new_layout) };
        if !new_ptr.is_null() {
            let n = layout.size().min(new_size);
            // SAFETY: both regions are valid for `n` bytes and do not overlap.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new_ptr, n);
                self.dealloc(ptr, layout);
            }
        }
        new_ptr
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn absurd_capacity_does_not_abort() {
        // 2^31 elements of 64 bytes: 128 GiB of address space, far beyond this machine's memory.
        let v: Vec<[u8; 64]> = Vec::with_capacity(i32::MAX as usize);
        assert!(v.capacity() >= i32::MAX as usize);
    }

    #[test]
    fn grow_across_threshold_keeps_contents() {
        let mut v: Vec<u8> = vec![7u8; 1024];
        v.reserve(super::LAZY_MAPPING_THRESHOLD);
        assert!(v.iter().all(|b| *b == 7));
        v.shrink_to_fit();
        assert_eq!(v.len(), 1024);
    }
}
