//! Golden archives in `spec/testdata/`: the builder must reproduce them byte for byte, their
//! annotated dumps must match the checked-in `.dump` files, and they must load.
//!
//! Regenerate (only for unreleased format versions!) with `PYCDS_BLESS=1 cargo test -p
//! pycds-arena --test golden`. Released gold files are never regenerated.

mod common;

use std::convert::Infallible;
use std::path::PathBuf;

use common::{fake_addr, read_word};
use pycds_arena::{ArenaBuilder, LoadStrategy, LoadedArena, SpanId};

fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../spec/testdata")
}

fn profile(name: &[u8]) -> [u8; 32] {
    let mut p = [0u8; 32];
    p[..name.len()].copy_from_slice(name);
    p
}

/// One span with one 16-byte object: word 0 points at word 1, word 1 references extern "ext".
fn minimal() -> ArenaBuilder {
    let mut b = ArenaBuilder::new(profile(b"golden-minimal"));
    b.set_producer("pycds-arena golden");
    let ext = b.extern_id(b"ext");
    let s = b.begin_span(&[]);
    let o = b.alloc(16, 8);
    b.set_internal(o, o + 8);
    b.set_external(o + 8, ext);
    b.end_span(b"");
    b.add_root(b"main", o, s, b"");
    b
}

/// Two spans, the second depending on the first, with metadata everywhere.
fn two_spans() -> ArenaBuilder {
    let mut b = ArenaBuilder::new(profile(b"golden-two-spans"));
    b.set_producer("pycds-arena golden");
    b.set_archive_meta(b"archive meta");
    b.set_preferred_base(0x7f12_3400_0000);
    let none = b.extern_id(b"None");
    let len = b.extern_id(b"len");
    let s0 = b.begin_span(&[]);
    let a = b.alloc(24, 8);
    b.bytes_mut(a, 8).copy_from_slice(b"leafdata");
    b.set_external(a + 8, none);
    b.set_internal(a + 16, a);
    b.end_span(b"leaf span");
    let s1 = b.begin_span(&[s0]);
    let n = b.alloc(16, 16);
    b.set_internal(n, a + 4);
    b.set_external(n + 8, len);
    b.end_span(b"node span");
    b.add_root(b"pkg.node", n, s1, b"node root");
    b.add_root(b"pkg.leaf", a, s0, b"leaf root");
    b
}

fn empty() -> ArenaBuilder {
    ArenaBuilder::new(profile(b"golden-empty"))
}

fn check(name: &str, builder: ArenaBuilder) {
    let bytes = builder.finish().expect("golden archive builds");
    let text = pycds_arena::dump::dump(&bytes).expect("golden archive dumps");
    let arena_path = testdata().join(format!("{name}.arena"));
    let dump_path = testdata().join(format!("{name}.dump"));
    if std::env::var_os("PYCDS_BLESS").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(testdata()).unwrap();
        std::fs::write(&arena_path, &bytes).unwrap();
        std::fs::write(&dump_path, &text).unwrap();
    }
    let on_disk = std::fs::read(&arena_path)
        .unwrap_or_else(|e| panic!("{}: {e} (bless with PYCDS_BLESS=1)", arena_path.display()));
    assert!(
        on_disk == bytes,
        "{name}: builder output differs from the gold file"
    );
    let on_disk_dump = std::fs::read_to_string(&dump_path).unwrap();
    assert_eq!(on_disk_dump, text, "{name}: dump differs");
    for strategy in [LoadStrategy::Map, LoadStrategy::Read] {
        let arena = LoadedArena::open(&arena_path, strategy).unwrap();
        for i in 0..arena.archive().span_count() {
            arena
                .load_span::<Infallible>(SpanId(i), &mut |_| Ok(()), &mut |_, n| Ok(fake_addr(n)))
                .unwrap();
        }
        for r in 0..arena.archive().root_count() {
            let root = arena.archive().root(r).unwrap();
            assert!(arena.is_loaded(root.span));
            let _ = read_word(&arena, root.object & !7);
        }
    }
}

#[test]
fn golden_minimal() {
    check("v1-minimal", minimal());
    // Spot-check relocation of the minimal archive.
    let bytes = std::fs::read(testdata().join("v1-minimal.arena")).unwrap();
    let arena = LoadedArena::from_bytes(&bytes).unwrap();
    arena
        .load_span::<Infallible>(SpanId(0), &mut |_| Ok(()), &mut |_, n| Ok(fake_addr(n)))
        .unwrap();
    let base = arena.base() as u64;
    assert_eq!(read_word(&arena, 128), base + 136);
    assert_eq!(read_word(&arena, 136), fake_addr(b"ext"));
}

#[test]
fn golden_two_spans() {
    check("v1-two-spans", two_spans());
}

#[test]
fn golden_empty() {
    check("v1-empty", empty());
}
