//! Helpers shared by the fuzz targets: the oracles that turn "did not panic" into "did the
//! right thing".

use pycds_arena::{Archive, ExternId, Slot, SpanId, SpanView};
use pycds_pyformat::{Layout, PyVersion, SpanPlan};

/// A copy of `data` with every checksum recomputed from the (possibly garbage) raw fields,
/// in dependency order: span CRCs (heap bytes, bitmaps, meta), section CRCs, the section
/// table CRC, the header CRC. Anything out of range is skipped. Every byte of an arena file
/// is covered by a CRC, so without this almost every mutation would only exercise the
/// checksum checks; with it, the structural checks decide. `None` if shorter than a header.
pub fn repair_crcs(data: &[u8]) -> Option<Vec<u8>> {
    fn rd(b: &[u8], base: u64, rel: u64, n: usize) -> Option<u64> {
        let off = usize::try_from(base.checked_add(rel)?).ok()?;
        let s = b.get(off..off.checked_add(n)?)?;
        let mut v = [0u8; 8];
        v[..n].copy_from_slice(s);
        Some(u64::from_le_bytes(v))
    }
    fn range(b: &[u8], off: u64, len: u64) -> Option<&[u8]> {
        let off = usize::try_from(off).ok()?;
        let len = usize::try_from(len).ok()?;
        b.get(off..off.checked_add(len)?)
    }
    fn wr32(b: &mut [u8], base: u64, rel: u64, v: u32) {
        if let Some(s) = base
            .checked_add(rel)
            .and_then(|o| usize::try_from(o).ok())
            .and_then(|o| b.get_mut(o..o.checked_add(4)?))
        {
            s.copy_from_slice(&v.to_le_bytes());
        }
    }
    if data.len() < 128 {
        return None;
    }
    let mut b = data.to_vec();
    let st = rd(&b, 104, 0, 8)?;
    let count = rd(&b, 112, 0, 4)?.min(b.len() as u64 / 24);
    // (entry offset, kind, offset, len) of every readable section table entry
    let entries: Vec<(u64, u64, u64, u64)> = (0..count)
        .map_while(|i| {
            let e = st.checked_add(24 * i)?;
            Some((e, rd(&b, e, 0, 4)?, rd(&b, e, 8, 8)?, rd(&b, e, 16, 8)?))
        })
        .collect();
    let find = |k: u64| entries.iter().find(|x| x.1 == k).map(|x| (x.2, x.3));
    if let (Some((so, sl)), Some((bo, _)), Some((mo, _))) = (find(3), find(6), find(7)) {
        for i in 0..(sl / 56).min(b.len() as u64) {
            let Some(e) = so.checked_add(56 * i) else {
                break;
            };
            let f = |o: u64, n: usize| rd(&b, e, o, n);
            let (Some(start), Some(len), Some(boff), Some(blen), Some(moff), Some(mlen)) =
                (f(0, 8), f(8, 8), f(16, 8), f(24, 8), f(40, 4), f(44, 4))
            else {
                break;
            };
            let parts = (
                range(&b, start, len),
                bo.checked_add(boff)
                    .and_then(|x| range(&b, x, blen.checked_mul(2)?)),
                mo.checked_add(moff).and_then(|x| range(&b, x, mlen)),
            );
            if let (Some(h), Some(bm), Some(m)) = parts {
                let mut c = crc32fast::Hasher::new();
                c.update(h);
                c.update(bm);
                c.update(m);
                let v = c.finalize();
                wr32(&mut b, e, 48, v);
            }
        }
    }
    for &(e, _, off, len) in &entries {
        if let Some(s) = range(&b, off, len) {
            let v = crc32fast::hash(s);
            wr32(&mut b, e, 4, v);
        }
    }
    if let Some(t) = range(&b, st, count * 24) {
        let v = crc32fast::hash(t);
        wr32(&mut b, 116, 0, v);
    }
    b[120..124].fill(0);
    let v = crc32fast::hash(&b[..128]);
    wr32(&mut b, 120, 0, v);
    Some(b)
}

/// The input as given, then (when it differs) with its checksums repaired.
pub fn variants(data: &[u8]) -> impl Iterator<Item = std::borrow::Cow<'_, [u8]>> {
    let repaired = repair_crcs(data).filter(|r| r.as_slice() != data);
    core::iter::once(std::borrow::Cow::Borrowed(data)).chain(repaired.map(std::borrow::Cow::Owned))
}

/// The three supported layouts.
pub const VERSIONS: [PyVersion; 3] = [PyVersion::V3_11, PyVersion::V3_12, PyVersion::V3_13];

/// The CPython release an archive was written for (from its fingerprint), if it names one.
pub fn archive_version(a: &Archive<'_>) -> Option<PyVersion> {
    pycds_pyformat::profile::archive_version(a).ok()
}

/// The roots of each span as the loader hands them to the checker: (object, is_holder).
/// `None` when a root's metadata is malformed (the loader refuses the archive then).
pub fn span_roots(a: &Archive<'_>) -> Option<Vec<Vec<(u64, bool)>>> {
    pycds_pyformat::meta::span_roots(a).ok()
}

/// Table-level invariants any archive that `Archive::from_bytes` accepted must satisfy.
pub fn assert_tables_sound(a: &Archive<'_>, file_len: usize) {
    assert_eq!(a.file_len(), file_len as u64);
    let heap = a.heap_range();
    assert_eq!(heap.start, 128);
    assert!(heap.end <= file_len as u64);
    for i in 0..a.extern_count() {
        assert!(
            a.extern_name(ExternId(i)).is_some(),
            "extern {i} has no name"
        );
    }
    assert!(a.extern_name(ExternId(a.extern_count())).is_none());
    let mut pos = heap.start;
    for i in 0..a.span_count() {
        let s = a.span(SpanId(i)).expect("span(i) for i < span_count()");
        assert_eq!(s.id, SpanId(i));
        assert_eq!(s.start, pos, "spans tile the heap");
        pos = s.start + s.len;
        let mut prev = None;
        for d in s.deps.iter() {
            assert!(d.0 < i, "dependency {} of span {i} not lower", d.0);
            assert!(
                prev.is_none_or(|p: SpanId| p < d),
                "dependencies not increasing"
            );
            prev = Some(d);
        }
    }
    assert_eq!(pos, heap.end, "spans end at the heap end");
    assert!(a.span(SpanId(a.span_count())).is_none());
    let mut prev: Option<&[u8]> = None;
    for i in 0..a.root_count() {
        let r = a.root(i).expect("root(i) for i < root_count()");
        assert!(prev.is_none_or(|p| p < r.name), "roots not strictly sorted");
        prev = Some(r.name);
        let s = a.span(r.span).expect("root names a valid span");
        assert!(
            s.start <= r.object && r.object < s.start + s.len,
            "root outside its span"
        );
        let found = a.find_root(r.name).expect("find_root finds every root");
        assert_eq!(
            (found.name, found.object, found.span),
            (r.name, r.object, r.span)
        );
    }
    assert!(a.root(a.root_count()).is_none());
}

/// Slot-level invariants of a span that `verify_span` accepted (format.md ARENA-SPAN-*).
pub fn assert_span_sound(a: &Archive<'_>, view: &SpanView<'_>) {
    let info = a.span(view.id()).expect("verified span exists");
    assert_eq!((view.start(), view.len()), (info.start, info.len));
    assert_eq!(view.bytes().len() as u64, info.len);
    let (start, end) = (info.start, info.start + info.len);
    let allowed = |t: u64| {
        (start..end).contains(&t)
            || info.deps.iter().any(|d| {
                let ds = a.span(d).expect("dependency exists");
                (ds.start..ds.start + ds.len).contains(&t)
            })
    };
    let mut n_int = 0usize;
    for (slot, target) in view.internal_slots() {
        n_int += 1;
        assert!(
            slot % 8 == 0 && (start..end).contains(&slot),
            "internal slot {slot:#x} outside span"
        );
        assert!(
            allowed(target),
            "internal target {target:#x} outside span and deps"
        );
        assert!(matches!(view.slot(slot), Slot::Internal(t) if t == target));
    }
    let mut n_ext = 0usize;
    for (slot, id) in view.external_slots() {
        n_ext += 1;
        assert!(
            slot % 8 == 0 && (start..end).contains(&slot),
            "external slot {slot:#x} outside span"
        );
        assert!(id.0 < a.extern_count(), "extern id {} out of range", id.0);
        assert!(matches!(view.slot(slot), Slot::External(x) if x == id));
    }
    // slot() agrees with the iterators on every word.
    let mut seen = (0usize, 0usize);
    let mut w = start;
    while w < end {
        match view.slot(w) {
            Slot::Internal(_) => seen.0 += 1,
            Slot::External(_) => seen.1 += 1,
            Slot::None => {}
        }
        w += 8;
    }
    assert_eq!(
        seen,
        (n_int, n_ext),
        "slot() disagrees with the slot iterators"
    );
}

/// The loader writes through a plan with raw pointers (`pycds-pyhook` `apply`): every
/// offset in it must be inside the span, 8-aligned where a word is written, and refer to what
/// the plan says.
pub fn assert_plan_sound(view: &SpanView<'_>, plan: &SpanPlan, layout: &Layout) {
    let (start, end) = (view.start(), view.start() + view.len());
    let inside = |o: u64, n: u64| o >= start && o.checked_add(n).is_some_and(|e| e <= end);
    for (members, refs) in &plan.frozen {
        if let Some(m) = members {
            assert!(
                inside(*m, layout.tuple_items as u64),
                "frozenset members outside span"
            );
        }
        let refs = plan
            .frozen_refs
            .get(refs.clone())
            .expect("frozen ref range in bounds");
        for &slot in refs {
            assert!(
                slot % 8 == 0 && inside(slot, 8),
                "frozenset slot {slot:#x} outside span"
            );
            match (view.slot(slot), members) {
                (Slot::Internal(t), Some(m)) => assert_eq!(t, *m),
                (Slot::External(_), None) => {}
                (s, m) => panic!("frozenset slot {slot:#x}: {s:?} vs members {m:?}"),
            }
        }
    }
    for &c in &plan.codes {
        assert!(
            c % 8 == 0 && inside(c, layout.code.adaptive as u64),
            "code {c:#x} outside span"
        );
    }
    assert!(plan.objects as u64 <= view.len() / 8);
}
