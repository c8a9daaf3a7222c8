//! File handling: non-regular files are refused without blocking, atomic publishing, both load
//! strategies from disk, and the Read strategy's behaviour when a file is truncated after open.

mod common;

use std::convert::Infallible;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{fake_addr, read_bytes, read_word, sample, sample_builder};
use pycds_arena::{ArenaError, ErrorKind, LoadError, LoadStrategy, LoadedArena, SpanId};

fn dir_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn write_atomic_publishes_and_leaves_no_temp_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.arena");
    let n = sample_builder().0.write_atomic(&path).unwrap();
    assert_eq!(n, fs::metadata(&path).unwrap().len());
    assert_eq!(fs::read(&path).unwrap(), sample().bytes);
    // Overwrite: a mapped old version keeps its contents (rename, not in-place write).
    let old = LoadedArena::open(&path, LoadStrategy::Map).unwrap();
    let mut b = sample_builder().0;
    b.set_producer("second");
    b.write_atomic(&path).unwrap();
    assert_eq!(old.archive().producer(), "pycds-arena tests");
    old.load_span::<Infallible>(SpanId(2), &mut |_| Ok(()), &mut |_, n| Ok(fake_addr(n)))
        .unwrap();
    let new = LoadedArena::open(&path, LoadStrategy::Read).unwrap();
    assert_eq!(new.archive().producer(), "second");
    assert_eq!(dir_names(dir.path()), vec!["x.arena".to_string()]);
}

#[test]
fn write_atomic_failure_keeps_old_file_and_removes_temp() {
    let dir = tempfile::tempdir().unwrap();
    // The target is a non-empty directory: the final rename fails after the temp file was
    // written and fsynced; the temp file must be removed and the target left alone.
    let target = dir.path().join("t.arena");
    fs::create_dir(&target).unwrap();
    fs::write(target.join("keep"), b"old").unwrap();
    let e = sample_builder().0.write_atomic(&target).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::Io(_)), "{e}");
    assert_eq!(fs::read(target.join("keep")).unwrap(), b"old");
    assert_eq!(dir_names(dir.path()), vec!["t.arena".to_string()]);
    // A builder error happens before any file is created.
    let file = dir.path().join("f.arena");
    fs::write(&file, b"old file").unwrap();
    let mut b = sample_builder().0;
    b.set_producer(&"p".repeat(300));
    assert!(b.write_atomic(&file).is_err());
    assert_eq!(fs::read(&file).unwrap(), b"old file");
    assert_eq!(
        dir_names(dir.path()),
        vec!["f.arena".to_string(), "t.arena".to_string()]
    );
    // A missing directory fails cleanly.
    assert!(sample_builder()
        .0
        .write_atomic(&dir.path().join("nope/x.arena"))
        .is_err());
}

fn assert_not_regular(r: Result<LoadedArena, ArenaError>) {
    let e = r.unwrap_err();
    assert!(matches!(e.kind, ErrorKind::NotRegularFile), "{e}");
    assert!(!e.is_corrupt() && !e.is_incompatible());
}

#[test]
fn directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for s in [LoadStrategy::Map, LoadStrategy::Read] {
        assert_not_regular(LoadedArena::open(dir.path(), s));
    }
}

#[test]
fn fifo_is_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe.arena");
    let status = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(status.success());
    let start = Instant::now();
    for s in [LoadStrategy::Map, LoadStrategy::Read] {
        assert_not_regular(LoadedArena::open(&fifo, s));
    }
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn dev_null_is_refused() {
    assert_not_regular(LoadedArena::open(
        Path::new("/dev/null"),
        LoadStrategy::Read,
    ));
}

#[test]
fn short_and_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("short.arena");
    fs::write(&p, b"\x89ARENA\r\n").unwrap();
    for s in [LoadStrategy::Map, LoadStrategy::Read] {
        let e = LoadedArena::open(&p, s).unwrap_err();
        assert!(matches!(e.kind, ErrorKind::TooShort { .. }), "{e}");
    }
    let e = LoadedArena::open(&dir.path().join("missing"), LoadStrategy::Read).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::Io(_)));
}

#[test]
fn both_strategies_load_from_disk() {
    let s = sample();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s.arena");
    fs::write(&p, &s.bytes).unwrap();
    for strategy in [LoadStrategy::Map, LoadStrategy::Read] {
        let arena = LoadedArena::open(&p, strategy).unwrap();
        assert_eq!(arena.base() as usize % 4096, 0);
        arena
            .load_span::<Infallible>(SpanId(2), &mut |_| Ok(()), &mut |_, n| Ok(fake_addr(n)))
            .unwrap();
        let base = arena.base() as u64;
        for &(slot, target) in &s.internal {
            assert_eq!(read_word(&arena, slot), base + target, "{strategy:?}");
        }
        for &(slot, name) in &s.external {
            assert_eq!(read_word(&arena, slot), fake_addr(name), "{strategy:?}");
        }
        // Span 2 and its dependencies are loaded. The Read strategy verified and relocated
        // them with bitmaps read into buffers of its own: the mapping's copy of BITMAPS was
        // never written (so never became resident); the Map strategy sees the file's bytes.
        let at = span0_bitmaps_offset(&s.bytes);
        let in_file = &s.bytes[at as usize..at as usize + 8];
        assert_ne!(in_file, [0; 8]);
        let in_mapping = read_bytes(&arena, at, 8);
        match strategy {
            LoadStrategy::Read => assert_eq!(in_mapping, [0; 8]),
            _ => assert_eq!(in_mapping, in_file),
        }
    }
}

#[test]
fn corrupt_file_is_rejected_at_open() {
    let mut bytes = sample().bytes;
    let last = bytes.len() - 1;
    bytes[last - 20] ^= 0x40; // inside the tables
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.arena");
    fs::write(&p, &bytes).unwrap();
    for s in [LoadStrategy::Map, LoadStrategy::Read] {
        assert!(LoadedArena::open(&p, s).unwrap_err().is_corrupt());
    }
}

#[test]
fn read_strategy_survives_truncation_after_open() {
    // Not something clients should do (they publish with write_atomic), but the Read strategy
    // must turn it into an error instead of a SIGBUS.
    let s = sample();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.arena");
    fs::write(&p, &s.bytes).unwrap();
    let arena = LoadedArena::open(&p, LoadStrategy::Read).unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(100)
        .unwrap();
    let e = arena
        .load_span::<Infallible>(SpanId(0), &mut |_| Ok(()), &mut |_, n| Ok(fake_addr(n)))
        .unwrap_err();
    assert!(matches!(e, LoadError::Arena(ref e) if matches!(e.kind, ErrorKind::Io(_))));
    assert!(!arena.is_loaded(SpanId(0)));
}

/// File offset of the first byte of span 0's bitmaps (its internal bitmap), from the raw tables.
fn span0_bitmaps_offset(bytes: &[u8]) -> u64 {
    let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap());
    let ts = u64_at(88) as usize;
    let n = u32_at(112) as usize;
    let sec = |kind: u32| {
        (0..n)
            .map(|i| ts + 24 * i)
            .find(|&e| u32_at(e) == kind)
            .map(|e| u64_at(e + 8))
            .unwrap()
    };
    let (bitmaps, spans) = (sec(6), sec(3) as usize);
    bitmaps + u64_at(spans + 16)
}

#[test]
fn read_strategy_reads_span_bitmaps_at_load_not_at_open() {
    // Not something clients should do (files are published with write_atomic), but it shows
    // what the Read strategy reads when: span bitmaps are read (and checked through the span
    // CRC) when their span loads, not at open.
    use std::os::unix::fs::FileExt;
    let s = sample();
    let at = span0_bitmaps_offset(&s.bytes);
    let good = s.bytes[at as usize];
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("b.arena");
    let poke = |v: u8| {
        fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .write_all_at(&[v], at)
            .unwrap();
    };
    let load0 = |arena: &LoadedArena| {
        arena.load_span::<Infallible>(SpanId(0), &mut |_| Ok(()), &mut |_, n| Ok(fake_addr(n)))
    };

    // Corrupt at open, repaired before the load: open does not read (or check) BITMAPS, the
    // load reads the repaired bytes.
    fs::write(&p, &s.bytes).unwrap();
    poke(good ^ 0x80);
    let arena = LoadedArena::open(&p, LoadStrategy::Read).expect("BITMAPS not read at open");
    poke(good);
    load0(&arena).expect("bitmaps read at load");
    assert_eq!(
        read_word(&arena, s.internal[0].0),
        arena.base() as u64 + s.internal[0].1
    );

    // Intact at open, corrupted before the load: the span CRC catches it.
    let arena = LoadedArena::open(&p, LoadStrategy::Read).unwrap();
    poke(good ^ 0x80);
    let e = load0(&arena).unwrap_err();
    assert!(
        matches!(e, LoadError::Arena(ref e) if matches!(e.kind, ErrorKind::SpanChecksum { span: 0, .. })),
        "{e}"
    );
    assert!(!arena.is_loaded(SpanId(0)));
}
