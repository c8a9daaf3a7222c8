//! `LoadedArena::release_span`: a released span never loads again, and the pages that hold
//! only released or never-loaded spans' bytes go back to the system, for each strategy.
//!
//! `unsafe` is allowed here for the calls of `release_span` (whose contract the test keeps:
//! it reads released bytes only through raw reads of still-mapped memory, to see what the
//! system gave back) and `sysconf`.
#![allow(unsafe_code)]

mod common;

use std::convert::Infallible;

use common::{read_bytes, read_word, PROFILE};
use pycds_arena::{ArenaBuilder, ErrorKind, LoadError, LoadStrategy, LoadedArena, SpanId};

/// Page size the tests assume (the spans below are laid out in pages of it).
const PAGE: u64 = 4096;

/// Six spans: a small one (0) at offset 128, then five of 3 pages less 40 bytes each
/// (1..=5), so that consecutive spans share a page: span 1 is `[192, 12440)`, span 2
/// `[12440, 24688)`, span 3 `[24688, 36936)`, span 4 `[36936, 49184)`. Every word of span `i` holds `i * 0x1_0000 + word`,
/// except its first, an internal slot pointing at its second word.
fn build() -> (Vec<u8>, Vec<(u64, u64)>) {
    let mut b = ArenaBuilder::new(PROFILE);
    let mut ranges = Vec::new();
    for i in 0..6u64 {
        let s = b.begin_span(&[]);
        let len = if i == 0 { 64 } else { 3 * PAGE - 40 };
        let at = b.alloc(len as usize, 8);
        for w in 1..len / 8 {
            b.bytes_mut(at + 8 * w, 8)
                .copy_from_slice(&(i * 0x1_0000 + w).to_le_bytes());
        }
        b.set_internal(at, at + 8);
        b.end_span(b"");
        b.add_root(format!("s{i}").as_bytes(), at, s, b"");
        ranges.push((at, len));
    }
    (b.finish().unwrap(), ranges)
}

fn load(arena: &LoadedArena, i: u32) {
    arena
        .load_span::<Infallible>(SpanId(i), &mut |_| Ok(()), &mut |_, _| Ok(1))
        .unwrap();
}

fn intact(arena: &LoadedArena, ranges: &[(u64, u64)], i: usize) {
    let (at, len) = ranges[i];
    assert_eq!(
        read_word(arena, at),
        arena.base() as u64 + at + 8,
        "span {i} slot"
    );
    for w in 1..len / 8 {
        assert_eq!(
            read_word(arena, at + 8 * w),
            i as u64 * 0x1_0000 + w,
            "span {i} word {w}"
        );
    }
}

fn file_arena(bytes: &[u8], strategy: LoadStrategy) -> (tempfile::TempDir, LoadedArena) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.arena");
    std::fs::write(&path, bytes).unwrap();
    let arena = LoadedArena::open(&path, strategy).unwrap();
    (dir, arena)
}

#[test]
fn release_gives_back_free_pages_only() {
    // SAFETY: `sysconf` has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if page != PAGE as libc::c_long {
        return; // the layout above assumes 4 KiB pages
    }
    let (bytes, ranges) = build();
    for strategy in [LoadStrategy::Read, LoadStrategy::Map] {
        let (_dir, arena) = file_arena(&bytes, strategy);
        for i in 1..=3 {
            load(&arena, i);
        }
        // Span 2 shares its first page with span 1 and its last with span 3, both loaded:
        // only its two whole pages go.
        // SAFETY: nothing uses span 2's bytes after this (the test reads them only through
        // raw reads of mapped memory, to see what the system gave back).
        let given = unsafe { arena.release_span(SpanId(2)) }.unwrap();
        assert_eq!(given, 2 * PAGE, "{strategy:?}");
        intact(&arena, &ranges, 1);
        intact(&arena, &ranges, 3);
        // The page wholly inside span 2 now holds zeros (Read) or the file's bytes (Map).
        let (at2, _) = ranges[2];
        let whole = at2.next_multiple_of(PAGE);
        let expect = match strategy {
            LoadStrategy::Read => vec![0u8; PAGE as usize],
            LoadStrategy::Map => bytes[whole as usize..(whole + PAGE) as usize].to_vec(),
        };
        assert_eq!(
            read_bytes(&arena, whole, PAGE as usize),
            expect,
            "{strategy:?}"
        );
        // Released: never loads again, never released twice.
        let again = arena.load_span::<Infallible>(SpanId(2), &mut |_| Ok(()), &mut |_, _| Ok(1));
        assert!(
            matches!(again, Err(LoadError::Arena(ref e)) if matches!(e.kind, ErrorKind::SpanReleased { span: 2 }))
        );
        assert!(!arena.is_loaded(SpanId(2)));
        // SAFETY: as above (the call fails without touching memory).
        assert!(unsafe { arena.release_span(SpanId(2)) }.is_err());
        // SAFETY: span 5 is not loaded: refused, nothing changes.
        assert!(unsafe { arena.release_span(SpanId(5)) }.is_err());
        // Span 3: its page shared with span 2 (released) goes now; the one shared with
        // span 4 (never loaded) too, since span 4's bytes come back when it loads.
        // SAFETY: as above.
        let given = unsafe { arena.release_span(SpanId(3)) }.unwrap();
        assert_eq!(given, 4 * PAGE, "{strategy:?}");
        load(&arena, 4);
        intact(&arena, &ranges, 4);
        intact(&arena, &ranges, 1);
        // Span 1 shares its first page with span 0 and the header, which never goes, and
        // its last with span 2 (released), which goes.
        // SAFETY: as above.
        let given = unsafe { arena.release_span(SpanId(1)) }.unwrap();
        assert_eq!(given, 3 * PAGE, "{strategy:?}");
        load(&arena, 0);
        intact(&arena, &ranges, 4);
        assert_eq!(
            read_word(&arena, ranges[0].0),
            arena.base() as u64 + ranges[0].0 + 8
        );
        // The tables (root lookup) are untouched.
        assert!(arena.archive().find_root(b"s5").is_some());
        load(&arena, 5);
        intact(&arena, &ranges, 5);
    }
}

#[test]
fn release_in_memory_only_marks() {
    let (bytes, ranges) = build();
    let arena = LoadedArena::from_bytes(&bytes).unwrap();
    load(&arena, 1);
    load(&arena, 2);
    // SAFETY: nothing uses span 1's bytes after this.
    assert_eq!(unsafe { arena.release_span(SpanId(1)) }.unwrap(), 0);
    assert!(!arena.is_loaded(SpanId(1)));
    intact(&arena, &ranges, 2);
    load(&arena, 3);
    intact(&arena, &ranges, 3);
}

/// The name of extern `i` of [`many_externs`] (33 bytes).
fn extern_name(i: u32) -> Vec<u8> {
    format!("an-extern-name-long-enough-{i:06}").into_bytes()
}

/// `n` spans of one word each, span `i` referencing extern [`extern_name`]`(i)` (names long
/// enough to fill several pages), with roots `r{i}`.
fn many_externs(n: u32) -> Vec<u8> {
    let mut b = ArenaBuilder::new(PROFILE);
    for i in 0..n {
        let x = b.extern_id(&extern_name(i));
        let s = b.begin_span(&[]);
        let at = b.alloc(8, 8);
        b.set_external(at, x);
        b.end_span(b"");
        b.add_root(format!("r{i:06}").as_bytes(), at, s, b"");
    }
    b.finish().unwrap()
}

/// [`many_externs`]`(n)` written to a file of a new temporary directory: (directory, file
/// path, bytes).
fn many_externs_file(n: u32) -> (tempfile::TempDir, std::path::PathBuf, Vec<u8>) {
    let bytes = many_externs(n);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("externs.arena");
    std::fs::write(&path, &bytes).unwrap();
    (dir, path, bytes)
}

/// Every extern's (id, name), from `for_each_extern_name`.
fn all_names(arena: &LoadedArena) -> Result<Vec<(u32, Vec<u8>)>, LoadError<Infallible>> {
    let mut seen = Vec::new();
    arena
        .for_each_extern_name::<Infallible>(&mut |id, nm| {
            seen.push((id.0, nm.to_vec()));
            Ok(())
        })
        .map(|()| seen)
}

/// Loads the span of root `r{i}` of [`many_externs`], resolving its extern to `addr`; checks
/// the relocated word and returns the name the resolver was given.
fn load_root(arena: &LoadedArena, i: u32, addr: u64) -> Vec<u8> {
    let root = arena
        .archive()
        .find_root(format!("r{i:06}").as_bytes())
        .unwrap();
    let mut got = Vec::new();
    arena
        .load_span::<Infallible>(root.span, &mut |_| Ok(()), &mut |_, nm| {
            got = nm.to_vec();
            Ok(addr)
        })
        .unwrap();
    assert_eq!(read_word(arena, root.object), addr);
    got
}

#[test]
fn read_strategy_leaves_extern_names_in_the_file_and_checks_them_when_read_back() {
    let n = 1000;
    let (_dir, path, bytes) = many_externs_file(n);
    let name = extern_name;
    for strategy in [LoadStrategy::Read, LoadStrategy::Map] {
        let arena = LoadedArena::open(&path, strategy).unwrap();
        let a = arena.archive();
        // Read: not in the archive view; Map: the file's page cache, in the view.
        assert_eq!(
            a.extern_name(pycds_arena::ExternId(3)).is_none(),
            strategy == LoadStrategy::Read
        );
        assert_eq!(
            all_names(&arena).unwrap(),
            (0..n).map(|i| (i, name(i))).collect::<Vec<_>>()
        );
        // Root names stay readable; each span resolves its own extern by its name.
        for i in [0, 1, 517, n - 1] {
            assert_eq!(
                load_root(&arena, i, 0x1000 + u64::from(i)),
                name(i),
                "{strategy:?}"
            );
        }
    }
    // Names changed in the file after open (in place, which publishing never does): a Read
    // arena refuses them when it reads them back, instead of resolving other names.
    let arena = LoadedArena::open(&path, LoadStrategy::Read).unwrap();
    let at = bytes.windows(33).position(|w| w == &name(700)[..]).unwrap();
    let mut changed = bytes.clone();
    changed[at + 32] = b'X';
    std::fs::write(&path, &changed).unwrap();
    let root = arena.archive().find_root(b"r000700").unwrap();
    let r = arena.load_span::<Infallible>(root.span, &mut |_| Ok(()), &mut |_, _| Ok(1));
    assert!(
        matches!(r, Err(LoadError::Arena(ref e)) if matches!(e.kind, ErrorKind::TableChecksum { .. })),
        "{r:?}"
    );
}

#[test]
fn read_strategy_keeps_extern_entries_only_until_resolved_and_reads_the_table_back() {
    let n = 1000;
    let (_dir, path, bytes) = many_externs_file(n);
    let name = extern_name;
    let expected: Vec<(u32, Vec<u8>)> = (0..n).map(|i| (i, name(i))).collect();
    let arena = LoadedArena::open(&path, LoadStrategy::Read).unwrap();
    assert_eq!(arena.archive().extern_count(), n);
    // Nothing resolved: every entry is in its cell.
    assert_eq!(all_names(&arena).unwrap(), expected);
    for i in [0, 3, 999] {
        assert_eq!(load_root(&arena, i, 0x2000 + u64::from(i)), name(i));
    }
    // Three cells hold addresses now: the entries come from the file, checked.
    assert_eq!(all_names(&arena).unwrap(), expected);
    // Asked for from a resolver (the load lock is held): refused, not a deadlock.
    let root = arena.archive().find_root(b"r000010").unwrap();
    let mut inner = None;
    arena
        .load_span::<Infallible>(root.span, &mut |_| Ok(()), &mut |_, _| {
            inner = Some(all_names(&arena).map(|_| ()));
            Ok(0x3000)
        })
        .unwrap();
    assert!(
        matches!(inner, Some(Err(LoadError::Arena(ref e))) if matches!(e.kind, ErrorKind::Reentrant)),
        "{inner:?}"
    );
    // The table changed in the file after open (in place, which publishing never does): refused
    // when read back.
    let mut entry = Vec::new();
    entry.extend_from_slice(&(5 * 33u32).to_le_bytes());
    entry.extend_from_slice(&33u32.to_le_bytes());
    let at = bytes.windows(8).position(|w| w == &entry[..]).unwrap();
    let mut changed = bytes.clone();
    changed[at + 4] = 32;
    std::fs::write(&path, &changed).unwrap();
    let r = all_names(&arena);
    assert!(
        matches!(r, Err(LoadError::Arena(ref e)) if matches!(e.kind, ErrorKind::TableChecksum { .. })),
        "{r:?}"
    );
    // A span using an extern not resolved yet still loads: its entry is in its cell.
    assert_eq!(load_root(&arena, 500, 0x4000), name(500));
}
