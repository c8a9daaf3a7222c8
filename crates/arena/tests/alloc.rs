//! The load path allocates O(1) per span, nothing per object: counted with a global allocator.
//!
//! `unsafe` is allowed in this test file only to implement `GlobalAlloc` (a thin counting wrapper
//! around the system allocator).
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};

use pycds_arena::{ArenaBuilder, LoadedArena, SpanId};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so `System`'s
// guarantees (valid, suitably aligned blocks; dealloc/realloc of blocks it returned) carry over;
// the counting only touches an atomic and a const-initialized thread-local `Cell` (no allocation).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(|c| c.get()) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged; `ptr` was returned by `System` via this wrapper.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.with(|c| c.get()) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged; `ptr` was returned by `System` via this wrapper.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn load_span_does_not_allocate_per_object() {
    const N: u64 = 100_000;
    let mut b = ArenaBuilder::new([0; 32]);
    let ext = b.extern_id(b"ext");
    let dep = b.begin_span(&[]);
    let d = b.alloc(8, 8);
    b.end_span(b"");
    let s = b.begin_span(&[dep]);
    let first = b.alloc(16 * N as usize, 8);
    for i in 0..N {
        let o = first + 16 * i;
        b.set_internal(o, if i == 0 { d } else { o - 16 });
        b.set_external(o + 8, ext);
    }
    b.end_span(b"");
    let bytes = b.finish().unwrap();
    let arena = LoadedArena::from_bytes(&bytes).unwrap();

    COUNTING.with(|c| c.set(true));
    let r = arena.load_span::<Infallible>(s, &mut |_| Ok(()), &mut |_, _| Ok(0x1000));
    COUNTING.with(|c| c.set(false));
    r.unwrap();
    assert!(arena.is_loaded(SpanId(0)) && arena.is_loaded(s));
    let n = ALLOCS.load(Ordering::Relaxed);
    // The loader's work stack allocates once, which also shows the counter is live.
    assert!(
        (1..=4).contains(&n),
        "{n} allocations to load {N} objects in 2 spans"
    );
}
