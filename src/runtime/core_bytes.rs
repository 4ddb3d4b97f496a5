//! `Bytes` over memory a core-local owner holds (a DMA read's buffer), without a copy.
//!
//! `Bytes::from_owner` wants a `Send` owner, because a `Bytes` may travel to another thread.
//! The runtime's read buffers are not `Send` (they return to the core's buffer pool through
//! reference counts that are not atomic). kopd never sends stored bytes across cores, but the
//! type system cannot know that, so the owner here checks, when it is dropped, that it is on
//! the thread that made it: there it drops the buffer normally; anywhere else it leaks it
//! (a bounded loss, counted, instead of touching the core's pool from a foreign thread).
//! Reading the bytes from any thread is fine: the memory does not move or change while the
//! owner lives, and `Bytes` reads it only through the pointer taken at creation.

use std::mem::ManuallyDrop;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::ThreadId;

use bytes::Bytes;

/// Owners dropped on a thread other than their own (and so leaked); expected to stay 0.
static LEAKED: AtomicU64 = AtomicU64::new(0);

struct CoreOwned<T: Deref<Target = [u8]>> {
    value: ManuallyDrop<T>,
    thread: ThreadId,
}

// SAFETY: the only operations on the owner after creation are `as_ref` (once, by
// `Bytes::from_owner`, on the creating thread) and `drop`, which touches `value` only on the
// creating thread and otherwise leaks it.
unsafe impl<T: Deref<Target = [u8]>> Send for CoreOwned<T> {}

impl<T: Deref<Target = [u8]>> AsRef<[u8]> for CoreOwned<T> {
    fn as_ref(&self) -> &[u8] {
        &self.value[..]
    }
}

impl<T: Deref<Target = [u8]>> Drop for CoreOwned<T> {
    fn drop(&mut self) {
        if std::thread::current().id() == self.thread {
            // SAFETY: dropped once, here; `value` is not used again.
            unsafe { ManuallyDrop::drop(&mut self.value) };
        } else {
            LEAKED.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// `Bytes` over `value`'s bytes, keeping `value` alive (and dropping it on this thread)
/// until the last clone is gone.
pub fn core_bytes<T: Deref<Target = [u8]> + 'static>(value: T) -> Bytes {
    Bytes::from_owner(CoreOwned { value: ManuallyDrop::new(value), thread: std::thread::current().id() })
}

/// How many core-local buffers were leaked because their last `Bytes` was dropped elsewhere.
pub fn leaked_core_buffers() -> u64 {
    LEAKED.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;

    use super::*;

    /// Not `Send` (an `Rc`), like the runtime's read buffers; counts its drops.
    struct Local {
        bytes: Vec<u8>,
        drops: Rc<Cell<u32>>,
    }

    impl Deref for Local {
        type Target = [u8];
        fn deref(&self) -> &[u8] {
            &self.bytes
        }
    }

    impl Drop for Local {
        fn drop(&mut self) {
            self.drops.set(self.drops.get() + 1);
        }
    }

    #[test]
    fn dropped_once_on_its_own_thread_after_the_last_clone() {
        let drops = Rc::new(Cell::new(0));
        let b = core_bytes(Local { bytes: b"stored batch".to_vec(), drops: drops.clone() });
        let part = b.slice(7..);
        drop(b);
        assert_eq!(drops.get(), 0, "a slice keeps the owner alive");
        assert_eq!(&part[..], b"batch");
        drop(part);
        assert_eq!(drops.get(), 1);
    }

    #[test]
    fn the_last_clone_dropped_elsewhere_leaks_instead() {
        let before = leaked_core_buffers();
        // A Send stand-in: what matters is which thread drops the owner.
        let b = core_bytes(&b"abc"[..]);
        let read = std::thread::spawn(move || {
            let v = b.to_vec();
            drop(b);
            v
        })
        .join()
        .expect("thread");
        assert_eq!(read, b"abc");
        assert_eq!(leaked_core_buffers(), before + 1);
    }
}
