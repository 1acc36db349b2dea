//! A counting global allocator, and a future wrapper that counts what one
//! future allocates.
//!
//! Counts are kept per thread: a future's `poll` runs on one thread, so the
//! difference of that thread's counters around each `poll` is exactly what
//! the future allocated, whatever the other tasks of the runtime do
//! meanwhile. Live bytes are process-wide, to see whether memory grows.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::task::{Context, Poll};

/// The system allocator, counting.
pub(crate) struct Counting;

static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);

thread_local! {
    // `const` and without `Drop`: reading them never allocates and works
    // while the thread is being torn down.
    static THREAD_ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    static THREAD_BYTES: Cell<u64> = const { Cell::new(0) };
}

fn count(bytes: usize) {
    let _ = THREAD_ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
    let _ = THREAD_BYTES.try_with(|total| total.set(total.get() + bytes as u64));
}

// SAFETY: every method forwards to `System` with the caller's arguments and
// only adds bookkeeping that neither allocates nor unwinds.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            count(layout.size());
            LIVE_BYTES.fetch_add(layout.size() as i64, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            count(layout.size());
            LIVE_BYTES.fetch_add(layout.size() as i64, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) };
        LIVE_BYTES.fetch_sub(layout.size() as i64, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            // A growing `Vec` is an allocation as far as cost goes.
            count(new_size);
            LIVE_BYTES.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        }
        new
    }
}

/// Bytes allocated and not yet freed, in the whole process.
pub(crate) fn live_bytes() -> i64 {
    LIVE_BYTES.load(Ordering::Relaxed)
}

/// What a future allocated while it was polled.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Usage {
    pub(crate) allocations: u64,
    pub(crate) bytes: u64,
}

fn thread_usage() -> Usage {
    Usage {
        allocations: THREAD_ALLOCATIONS.with(Cell::get),
        bytes: THREAD_BYTES.with(Cell::get),
    }
}

/// Runs `future`, counting what it allocates while polled (not what it
/// frees, nor what other tasks allocate meanwhile).
pub(crate) fn counted<F: Future>(future: F) -> Counted<F> {
    Counted {
        // Boxed before counting starts, so the wrapper needs no unsafe pin
        // projection and its own box is not counted.
        inner: Box::pin(future),
        usage: Usage::default(),
    }
}

/// See [`counted`].
pub(crate) struct Counted<F> {
    inner: Pin<Box<F>>,
    usage: Usage,
}

impl<F: Future> Future for Counted<F> {
    type Output = (F::Output, Usage);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let before = thread_usage();
        let poll = self.inner.as_mut().poll(cx);
        let after = thread_usage();
        self.usage.allocations += after.allocations - before.allocations;
        self.usage.bytes += after.bytes - before.bytes;
        poll.map(|output| (output, self.usage))
    }
}
