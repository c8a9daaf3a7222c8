//! Shared helpers for the integration tests.
//!
//! `unsafe` is allowed here (and only here among the tests) for one purpose: reading words of
//! loaded spans through `LoadedArena::base()`, which is how clients read relocated memory.
#![allow(unsafe_code)]
#![allow(dead_code)]

use pycds_arena::{ArenaBuilder, LoadedArena};

/// The profile used by test archives.
pub const PROFILE: [u8; 32] = *b"pycds-arena-test-profile-0000001";

/// Reads the native-endian word at base-relative `offset` of a loaded arena.
///
/// Callers must only pass 8-aligned offsets inside spans that are loaded.
pub fn read_word(arena: &LoadedArena, offset: u64) -> u64 {
    assert!(offset % 8 == 0 && offset + 8 <= arena.len());
    // SAFETY:
    // - in bounds: `offset + 8 <= arena.len()` (asserted above), and `base()` points to the
    //   start of the arena's memory of `len()` bytes;
    // - aligned: `base()` is page-aligned and `offset % 8 == 0` (asserted above);
    // - initialized and not concurrently written: the tests only read spans after `load_span`
    //   returned (the arena's writes are published) and nothing else writes to them.
    unsafe { arena.base().add(offset as usize).cast::<u64>().read() }
}

/// Reads `len` bytes at base-relative `offset` of a loaded arena (same rules as `read_word`).
pub fn read_bytes(arena: &LoadedArena, offset: u64, len: usize) -> Vec<u8> {
    assert!(offset + len as u64 <= arena.len());
    let mut out = vec![0u8; len];
    // SAFETY:
    // - source in bounds (asserted above) and valid for reads, initialized mapped memory;
    // - destination is a fresh `Vec` of `len` bytes; the regions cannot overlap;
    // - no concurrent writes: callers only read loaded spans that nothing else writes.
    unsafe {
        core::ptr::copy_nonoverlapping(
            arena.base().add(offset as usize).cast_const(),
            out.as_mut_ptr(),
            len,
        )
    };
    out
}

/// A sample archive: three spans (2 depends on 0 and 1), externs, roots, metadata.
pub struct Sample {
    /// The archive bytes.
    pub bytes: Vec<u8>,
    /// Offsets of interesting slots: (slot, expected target) for internal slots.
    pub internal: Vec<(u64, u64)>,
    /// (slot, extern name) for external slots.
    pub external: Vec<(u64, &'static [u8])>,
}

/// Internal slots `(slot, target)` and external slots `(slot, extern name)` of the sample.
pub type SampleSlots = (Vec<(u64, u64)>, Vec<(u64, &'static [u8])>);

/// The sample's builder (not finished) and its slots.
pub fn sample_builder() -> (ArenaBuilder, SampleSlots) {
    let mut b = ArenaBuilder::new(PROFILE);
    b.set_producer("pycds-arena tests");
    b.set_archive_meta(b"archive-meta");
    b.set_preferred_base(0x7f00_0000_0000);
    let e_none = b.extern_id(b"None");
    let e_print = b.extern_id(b"print");
    let mut internal = Vec::new();
    let mut external = Vec::new();

    let s0 = b.begin_span(&[]);
    let a = b.alloc(24, 8);
    b.bytes_mut(a, 8).copy_from_slice(b"objectA!");
    b.set_external(a + 8, e_none);
    external.push((a + 8, &b"None"[..]));
    b.set_internal(a + 16, a);
    internal.push((a + 16, a));
    b.end_span(b"span0-meta");

    let s1 = b.begin_span(&[]);
    let c = b.alloc(5, 16);
    b.bytes_mut(c, 5).copy_from_slice(b"hello");
    let d = b.alloc(16, 8);
    b.set_external(d, e_print);
    external.push((d, &b"print"[..]));
    b.set_internal(d + 8, c + 2);
    internal.push((d + 8, c + 2));
    b.end_span(b"");

    let s2 = b.begin_span(&[s1, s0]);
    let e = b.alloc(32, 8);
    b.set_internal(e, a);
    internal.push((e, a));
    b.set_internal(e + 8, d);
    internal.push((e + 8, d));
    b.set_internal(e + 16, e + 24);
    internal.push((e + 16, e + 24));
    b.set_external(e + 24, e_none);
    external.push((e + 24, &b"None"[..]));
    b.end_span(b"span2");

    b.add_root(b"mod.b", e, s2, b"root-b");
    b.add_root(b"mod.a", a, s0, b"");
    b.add_root(b"mod.c", c, s1, b"c");
    (b, (internal, external))
}

pub fn sample() -> Sample {
    let (b, (internal, external)) = sample_builder();
    Sample {
        bytes: b.finish().expect("sample builds"),
        internal,
        external,
    }
}

/// Deterministic address for an extern name (never 0).
pub fn fake_addr(name: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in name {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h | 1
}
