//! Round trips: builder -> bytes/file -> Archive / LoadedArena, including random object graphs.

mod common;

use std::collections::HashMap;
use std::convert::Infallible;

use common::{fake_addr, read_bytes, read_word, sample, PROFILE};
use proptest::prelude::*;
use pycds_arena::{
    Archive, ArenaBuilder, ErrorKind, ExternId, LoadError, LoadStrategy, LoadedArena, Slot, SpanId,
    FORMAT_MAJOR, FORMAT_MINOR, HEAP_START,
};

fn load_all(arena: &LoadedArena) -> HashMap<u32, usize> {
    let mut calls: HashMap<u32, usize> = HashMap::new();
    for i in (0..arena.archive().span_count()).rev() {
        arena
            .load_span::<Infallible>(SpanId(i), &mut |_| Ok(()), &mut |id, name| {
                *calls.entry(id.0).or_default() += 1;
                Ok(fake_addr(name))
            })
            .expect("load");
    }
    calls
}

#[test]
fn archive_accessors() {
    let s = sample();
    let a = Archive::from_bytes(&s.bytes).unwrap();
    assert_eq!(a.format_version(), (FORMAT_MAJOR, FORMAT_MINOR));
    assert_eq!(a.profile(), &PROFILE);
    a.check_profile(&PROFILE).unwrap();
    assert_eq!(a.producer(), "pycds-arena tests");
    assert_eq!(a.archive_meta(), b"archive-meta");
    assert_eq!(a.preferred_base(), 0x7f00_0000_0000);
    assert_eq!(a.file_len(), s.bytes.len() as u64);
    assert_eq!(a.heap_range().start, HEAP_START);
    assert_eq!(a.extern_count(), 2);
    assert_eq!(a.extern_name(ExternId(1)), Some(&b"print"[..]));
    assert_eq!(a.extern_name(ExternId(2)), None);
    assert_eq!(a.span_count(), 3);
    let s2 = a.span(SpanId(2)).unwrap();
    assert_eq!(s2.deps.to_vec(), vec![SpanId(0), SpanId(1)]);
    assert_eq!(s2.meta, b"span2");
    assert!(a.span(SpanId(3)).is_none());
    assert_eq!(a.root_count(), 3);
    let names: Vec<&[u8]> = (0..3).map(|i| a.root(i).unwrap().name).collect();
    assert_eq!(names, vec![&b"mod.a"[..], b"mod.b", b"mod.c"]);
    let b = a.find_root(b"mod.b").unwrap();
    assert_eq!((b.span, b.meta), (SpanId(2), &b"root-b"[..]));
    assert!(a.find_root(b"mod.z").is_none());
    assert!(a.find_root(b"").is_none());
    a.verify_all().unwrap();
}

#[test]
fn span_view_slots() {
    let s = sample();
    let a = Archive::from_bytes(&s.bytes).unwrap();
    let mut all_internal = Vec::new();
    let mut all_external = Vec::new();
    for i in 0..a.span_count() {
        let v = a.verify_span(SpanId(i)).unwrap();
        all_internal.extend(v.internal_slots());
        all_external.extend(v.external_slots());
        for (slot, target) in v.internal_slots() {
            assert_eq!(v.slot(slot), Slot::Internal(target));
            assert_eq!(v.read_u64(slot), Some(target));
        }
        assert_eq!(v.slot(v.start() + 1), Slot::None);
        assert_eq!(v.read_u64(v.start() + v.len()), None);
    }
    all_internal.sort();
    let mut expected = s.internal.clone();
    expected.sort();
    assert_eq!(all_internal, expected);
    let names: Vec<(u64, &[u8])> = all_external
        .iter()
        .map(|&(slot, id)| (slot, a.extern_name(id).unwrap()))
        .collect();
    let mut expected_ext = s.external.clone();
    expected_ext.sort();
    assert_eq!(names, expected_ext);
}

#[test]
fn load_from_bytes_relocates() {
    let s = sample();
    let arena = LoadedArena::from_bytes(&s.bytes).unwrap();
    assert_eq!(arena.base() as usize % 4096, 0, "page-aligned base");
    let calls = load_all(&arena);
    assert!(
        calls.values().all(|&c| c == 1),
        "resolver called once per extern: {calls:?}"
    );
    assert_eq!(calls.len(), 2);
    let base = arena.base() as u64;
    for &(slot, target) in &s.internal {
        assert_eq!(read_word(&arena, slot), base + target);
    }
    for &(slot, name) in &s.external {
        assert_eq!(read_word(&arena, slot), fake_addr(name));
    }
    let c = arena.archive().find_root(b"mod.c").unwrap();
    assert_eq!(read_bytes(&arena, c.object, 5), b"hello");
}

#[test]
fn dependencies_load_first_and_check_sees_unrelocated_bytes() {
    let s = sample();
    let arena = LoadedArena::from_bytes(&s.bytes).unwrap();
    let mut seen = Vec::new();
    arena
        .load_span::<Infallible>(
            SpanId(2),
            &mut |v| {
                // Unrelocated: internal slots hold base-relative offsets.
                for (slot, target) in v.internal_slots() {
                    assert_eq!(v.read_u64(slot), Some(target));
                }
                seen.push(v.id());
                Ok(())
            },
            &mut |_, n| Ok(fake_addr(n)),
        )
        .unwrap();
    assert_eq!(seen, vec![SpanId(2), SpanId(0), SpanId(1)]);
    assert!((0..3).all(|i| arena.is_loaded(SpanId(i))));
    // Idempotent: no callback runs again.
    arena
        .load_span::<Infallible>(
            SpanId(2),
            &mut |_| panic!("check called twice"),
            &mut |_, _| panic!("resolve called twice"),
        )
        .unwrap();
}

#[test]
fn client_check_error_marks_failed_forever() {
    let s = sample();
    let arena = LoadedArena::from_bytes(&s.bytes).unwrap();
    let err = arena
        .load_span::<&str>(SpanId(1), &mut |_| Err("nope"), &mut |_, _| Ok(1))
        .unwrap_err();
    assert!(matches!(err, LoadError::Client("nope")));
    assert!(!arena.is_loaded(SpanId(1)));
    let err = arena
        .load_span::<&str>(SpanId(1), &mut |_| Ok(()), &mut |_, _| Ok(1))
        .unwrap_err();
    assert!(matches!(
        err,
        LoadError::Arena(ref e) if matches!(e.kind, ErrorKind::SpanFailed { span: 1 })
    ));
    // A span depending on the failed one fails too; an independent one still loads.
    assert!(arena
        .load_span::<&str>(SpanId(2), &mut |_| Ok(()), &mut |_, _| Ok(1))
        .is_err());
    assert!(!arena.is_loaded(SpanId(2)));
    arena
        .load_span::<&str>(SpanId(0), &mut |_| Ok(()), &mut |_, _| Ok(1))
        .unwrap();
}

#[test]
fn resolver_returning_zero_is_an_error() {
    let s = sample();
    let arena = LoadedArena::from_bytes(&s.bytes).unwrap();
    let err = arena
        .load_span::<Infallible>(SpanId(0), &mut |_| Ok(()), &mut |_, _| Ok(0))
        .unwrap_err();
    assert!(matches!(
        err,
        LoadError::Arena(ref e) if matches!(e.kind, ErrorKind::UnresolvedExtern { id: 0 })
    ));
}

#[test]
fn reentrant_load_is_refused() {
    let s = sample();
    let arena = LoadedArena::from_bytes(&s.bytes).unwrap();
    let mut inner = None;
    arena
        .load_span::<Infallible>(
            SpanId(0),
            &mut |_| {
                inner = Some(arena.load_span::<Infallible>(
                    SpanId(1),
                    &mut |_| Ok(()),
                    &mut |_, _| Ok(1),
                ));
                Ok(())
            },
            &mut |_, n| Ok(fake_addr(n)),
        )
        .unwrap();
    let inner = inner.unwrap().unwrap_err();
    assert!(matches!(
        inner,
        LoadError::Arena(ref e) if matches!(e.kind, ErrorKind::Reentrant)
    ));
}

#[test]
fn no_such_span() {
    let s = sample();
    let arena = LoadedArena::from_bytes(&s.bytes).unwrap();
    let err = arena
        .load_span::<Infallible>(SpanId(9), &mut |_| Ok(()), &mut |_, _| Ok(1))
        .unwrap_err();
    assert!(matches!(
        err,
        LoadError::Arena(ref e) if matches!(e.kind, ErrorKind::NoSuchSpan { span: 9 })
    ));
    assert!(matches!(
        arena.archive().verify_span(SpanId(0)).unwrap_err().kind,
        ErrorKind::HeapUnavailable
    ));
}

#[test]
fn concurrent_loads_from_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<LoadedArena>();
    let s = sample();
    let arena = LoadedArena::from_bytes(&s.bytes).unwrap().leak();
    let resolved = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for t in 0..4u32 {
            let resolved = &resolved;
            scope.spawn(move || {
                for i in 0..3 {
                    let id = SpanId((i + t) % 3);
                    arena
                        .load_span::<Infallible>(id, &mut |_| Ok(()), &mut |_, n| {
                            resolved.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            Ok(fake_addr(n))
                        })
                        .unwrap();
                    assert!(arena.is_loaded(id));
                }
            });
        }
    });
    assert_eq!(resolved.load(std::sync::atomic::Ordering::Relaxed), 2);
    let base = arena.base() as u64;
    for &(slot, target) in &s.internal {
        assert_eq!(read_word(arena, slot), base + target);
    }
}

#[test]
fn empty_archive() {
    let bytes = ArenaBuilder::new([0; 32]).finish().unwrap();
    let a = Archive::from_bytes(&bytes).unwrap();
    assert_eq!(
        (a.span_count(), a.root_count(), a.extern_count()),
        (0, 0, 0)
    );
    assert_eq!(a.heap_range(), HEAP_START..HEAP_START);
    LoadedArena::from_bytes(&bytes).unwrap();
}

#[test]
fn big_span_loads() {
    // 100k objects of 16 bytes, each pointing at the previous one; every 10th references an extern.
    let mut b = ArenaBuilder::new(PROFILE);
    let ext = b.extern_id(b"ext");
    let s = b.begin_span(&[]);
    let first = b.alloc(16 * 100_000, 8);
    for i in 0..100_000u64 {
        let o = first + 16 * i;
        if i > 0 {
            b.set_internal(o, o - 16);
        }
        if i % 10 == 0 {
            b.set_external(o + 8, ext);
        }
    }
    b.end_span(b"");
    b.add_root(b"big", first, s, b"");
    let bytes = b.finish().unwrap();
    let arena = LoadedArena::from_bytes(&bytes).unwrap();
    let mut calls = 0;
    arena
        .load_span::<Infallible>(s, &mut |_| Ok(()), &mut |_, _| {
            calls += 1;
            Ok(0xdead_0000)
        })
        .unwrap();
    assert_eq!(calls, 1);
    let base = arena.base() as u64;
    assert_eq!(
        read_word(&arena, first + 16 * 99_999),
        base + first + 16 * 99_998
    );
    assert_eq!(read_word(&arena, first + 8), 0xdead_0000);
    assert_eq!(read_word(&arena, first), 0);
}

// ---------------------------------------------------------------------------------------------
// Random object graphs.

#[derive(Clone, Debug)]
enum SlotSpec {
    /// Pointer into (object pick among own span + deps, byte pick).
    Internal(u8, u8),
    External(u8),
    Data(u64),
}

#[derive(Clone, Debug)]
struct ObjSpec {
    words: u8,
    align_shift: u8,
    slots: Vec<(u8, SlotSpec)>,
}

#[derive(Clone, Debug)]
struct SpanSpec {
    dep_mask: u8,
    objects: Vec<ObjSpec>,
}

fn slot_spec() -> impl Strategy<Value = SlotSpec> {
    prop_oneof![
        (any::<u8>(), any::<u8>()).prop_map(|(a, b)| SlotSpec::Internal(a, b)),
        any::<u8>().prop_map(SlotSpec::External),
        any::<u64>().prop_map(SlotSpec::Data),
    ]
}

fn graph() -> impl Strategy<Value = (u8, Vec<SpanSpec>)> {
    let obj = (
        1u8..6,
        0u8..3,
        prop::collection::vec((any::<u8>(), slot_spec()), 0..5),
    )
        .prop_map(|(words, align_shift, slots)| ObjSpec {
            words,
            align_shift,
            slots,
        });
    let span = (any::<u8>(), prop::collection::vec(obj, 1..8))
        .prop_map(|(dep_mask, objects)| SpanSpec { dep_mask, objects });
    (0u8..5, prop::collection::vec(span, 1..6))
}

#[derive(Debug, PartialEq)]
enum Expect {
    Internal(u64),
    External(Vec<u8>),
    Data(u64),
}

struct Built {
    bytes: Vec<u8>,
    expect: Vec<(u64, Expect)>,
}

fn build(n_externs: u8, spans: &[SpanSpec]) -> Built {
    let mut b = ArenaBuilder::new(PROFILE);
    b.set_producer("proptest");
    let names: Vec<Vec<u8>> = (0..n_externs)
        .map(|i| format!("ext{i}").into_bytes())
        .collect();
    // objects[span] = list of (offset, size)
    let mut objects: Vec<Vec<(u64, u64)>> = Vec::new();
    let mut expect: HashMap<u64, Expect> = HashMap::new();
    for (sid, spec) in spans.iter().enumerate() {
        let deps: Vec<SpanId> = (0..sid.min(8))
            .filter(|d| spec.dep_mask & (1 << d) != 0)
            .map(|d| SpanId(d as u32))
            .collect();
        let id = b.begin_span(&deps);
        let mut mine = Vec::new();
        for o in &spec.objects {
            let size = u64::from(o.words) * 8;
            let off = b.alloc(size as usize, 8 << o.align_shift);
            mine.push((off, size));
        }
        // Candidate target objects: own span + deps.
        let mut candidates: Vec<(u64, u64)> = mine.clone();
        for d in &deps {
            candidates.extend(objects[d.0 as usize].iter().copied());
        }
        for (o, &(off, size)) in spec.objects.iter().zip(mine.iter()) {
            for (w, slot) in &o.slots {
                let slot_off = off + 8 * (u64::from(*w) % (size / 8));
                match slot {
                    SlotSpec::Internal(obj, byte) => {
                        let (t_off, t_size) = candidates[*obj as usize % candidates.len()];
                        let target = t_off + u64::from(*byte) % t_size;
                        b.set_internal(slot_off, target);
                        expect.insert(slot_off, Expect::Internal(target));
                    }
                    SlotSpec::External(e) if n_externs > 0 => {
                        let name = &names[*e as usize % names.len()];
                        let eid = b.extern_id(name);
                        b.set_external(slot_off, eid);
                        expect.insert(slot_off, Expect::External(name.clone()));
                    }
                    SlotSpec::External(_) => {}
                    SlotSpec::Data(v) => {
                        // Only plain words that are not slots (a later set_* would override).
                        if let std::collections::hash_map::Entry::Vacant(e) = expect.entry(slot_off)
                        {
                            b.bytes_mut(slot_off, 8).copy_from_slice(&v.to_le_bytes());
                            e.insert(Expect::Data(*v));
                        }
                    }
                }
            }
        }
        let meta = format!("span{sid}");
        b.end_span(meta.as_bytes());
        b.add_root(format!("root{sid}").as_bytes(), mine[0].0, id, b"m");
        objects.push(mine);
    }
    let mut expect: Vec<(u64, Expect)> = expect.into_iter().collect();
    expect.sort_by_key(|e| e.0);
    Built {
        bytes: b.finish().expect("finish"),
        expect,
    }
}

fn check_loaded(arena: &LoadedArena, built: &Built) {
    let calls = load_all(arena);
    assert!(calls.values().all(|&c| c == 1));
    let base = arena.base() as u64;
    for (slot, e) in &built.expect {
        let got = read_word(arena, *slot);
        match e {
            Expect::Internal(t) => assert_eq!(got, base + t, "internal slot {slot:#x}"),
            Expect::External(name) => assert_eq!(got, fake_addr(name), "external slot {slot:#x}"),
            Expect::Data(v) => assert_eq!(got, u64::from_ne_bytes(v.to_le_bytes())),
        }
    }
}

fn check_archive(built: &Built) {
    let a = Archive::from_bytes(&built.bytes).expect("valid");
    a.verify_all().expect("spans verify");
    for (slot, e) in &built.expect {
        let span = (0..a.span_count())
            .map(SpanId)
            .find(|&s| {
                let i = a.span(s).unwrap();
                (i.start..i.start + i.len).contains(slot)
            })
            .unwrap();
        let v = a.verify_span(span).unwrap();
        match (v.slot(*slot), e) {
            (Slot::Internal(t), Expect::Internal(x)) => assert_eq!(t, *x),
            (Slot::External(id), Expect::External(name)) => {
                assert_eq!(a.extern_name(id).unwrap(), &name[..])
            }
            (Slot::None, Expect::Data(x)) => assert_eq!(v.read_u64(*slot), Some(*x)),
            (got, want) => panic!("slot {slot:#x}: {got:?} vs {want:?}"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_graphs_from_bytes((n_externs, spans) in graph()) {
        let built = build(n_externs, &spans);
        check_archive(&built);
        let arena = LoadedArena::from_bytes(&built.bytes).unwrap();
        check_loaded(&arena, &built);
        // Deterministic output.
        prop_assert_eq!(build(n_externs, &spans).bytes, built.bytes);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn random_graphs_from_file((n_externs, spans) in graph()) {
        let built = build(n_externs, &spans);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.arena");
        std::fs::write(&path, &built.bytes).unwrap();
        for strategy in [LoadStrategy::Map, LoadStrategy::Read] {
            let arena = LoadedArena::open(&path, strategy).unwrap();
            check_loaded(&arena, &built);
        }
    }
}
