//! Corruption and compatibility: every truncation, every bit flip of header and tables, flips
//! inside spans, version/flag/profile mismatches. Requirement ids refer to `spec/format.md`.

mod common;

use std::convert::Infallible;

use common::{sample, PROFILE};
use pycds_arena::layout::{self, Header};
use pycds_arena::{Archive, ArenaError, ErrorKind, LoadError, LoadStrategy, LoadedArena, SpanId};
use zerocopy::byteorder::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, IntoBytes};

fn header_of(bytes: &[u8]) -> Header {
    Header::read_from_prefix(bytes).unwrap().0
}

/// Rewrites the header with `f` applied and a correct header CRC.
fn patch_header(bytes: &mut [u8], f: impl FnOnce(&mut Header)) {
    let mut h = header_of(bytes);
    f(&mut h);
    h.header_crc = U32::new(layout::header_crc(&h));
    bytes[..128].copy_from_slice(h.as_bytes());
}

fn err(bytes: &[u8]) -> ArenaError {
    Archive::from_bytes(bytes).expect_err("must be rejected")
}

#[test]
fn every_truncation_is_rejected() {
    // ARENA-HDR-001, ARENA-HDR-007
    let s = sample();
    for len in 0..s.bytes.len() {
        let e = err(&s.bytes[..len]);
        assert!(e.is_corrupt(), "len {len}: {e}");
        if len < 128 {
            assert!(
                matches!(e.kind, ErrorKind::TooShort { .. }),
                "len {len}: {e}"
            );
        } else {
            assert!(
                matches!(e.kind, ErrorKind::LengthMismatch { .. }),
                "len {len}: {e}"
            );
        }
        assert!(LoadedArena::from_bytes(&s.bytes[..len]).is_err());
    }
    // Extension is rejected too.
    let mut longer = s.bytes.clone();
    longer.push(0);
    assert!(matches!(
        err(&longer).kind,
        ErrorKind::LengthMismatch { .. }
    ));
}

/// `(file offset, length)` of the section of `kind` (raw section table, no validation).
fn section_range(bytes: &[u8], kind: u32) -> (usize, usize) {
    let h = header_of(bytes);
    let ts = h.tables_start.get() as usize;
    let n = h.section_count.get() as usize;
    let e = <[layout::SectionEntry]>::ref_from_bytes(&bytes[ts..ts + 24 * n])
        .unwrap()
        .iter()
        .find(|e| e.kind.get() == kind)
        .copied()
        .unwrap();
    (e.offset.get() as usize, e.len.get() as usize)
}

/// The span entries of a (valid) archive, raw.
fn span_entries(bytes: &[u8]) -> Vec<layout::SpanEntry> {
    let (so, sl) = section_range(bytes, layout::SECTION_SPANS);
    <[layout::SpanEntry]>::ref_from_bytes(&bytes[so..so + sl])
        .unwrap()
        .to_vec()
}

/// The span whose bitmap pair holds byte `pos` of the file (which must lie in BITMAPS).
fn bitmaps_owner(bytes: &[u8], pos: usize) -> SpanId {
    let (bo, _) = section_range(bytes, layout::SECTION_BITMAPS);
    let rel = (pos - bo) as u64;
    let i = span_entries(bytes)
        .iter()
        .position(|e| {
            let off = e.bitmap_off.get();
            (off..off + 2 * e.bitmap_len.get()).contains(&rel)
        })
        .expect("BITMAPS bytes all belong to a span (ARENA-TAB-010)");
    SpanId(i as u32)
}

#[test]
fn every_bit_flip_of_header_and_tables_is_rejected() {
    let s = sample();
    let h = header_of(&s.bytes);
    let tables_start = h.tables_start.get() as usize;
    let (bo, bl) = section_range(&s.bytes, layout::SECTION_BITMAPS);
    let positions = (0..128).chain(tables_start..s.bytes.len());
    let mut n = 0;
    for pos in positions {
        for bit in 0..8 {
            let mut b = s.bytes.clone();
            b[pos] ^= 1 << bit;
            if (bo..bo + bl).contains(&pos) {
                // BITMAPS is not checked at open (ARENA-SEC-006 excludes it): its bytes are
                // covered by the span CRCs (ARENA-TAB-010), and by the full check.
                let a = Archive::from_bytes(&b).expect("BITMAPS is not read at open");
                assert!(a.verify_all().is_err(), "pos {pos} bit {bit}");
                n += 1;
                continue;
            }
            let e = err(&b);
            // Every flip is caught: fields checked before the header CRC report their own
            // error, everything else fails a CRC, a layout rule or a zero-padding rule.
            let _ = e.to_string();
            n += 1;
        }
    }
    assert!(n > 1000, "flipped {n} bits");
}

#[test]
fn open_does_not_touch_bitmaps_but_the_owning_span_does() {
    // ARENA-SEC-006 (BITMAPS excluded), ARENA-TAB-010, ARENA-SPAN-001, ARENA-SEC-008: flip every
    // bit of BITMAPS in turn. Opening succeeds (its cost must not grow with the heap); the span
    // whose bitmaps hold the byte fails its CRC when verified or loaded; the other spans verify;
    // the full check fails.
    let s = sample();
    let (bo, bl) = section_range(&s.bytes, layout::SECTION_BITMAPS);
    assert!(bl > 0);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.arena");
    for pos in bo..bo + bl {
        let owner = bitmaps_owner(&s.bytes, pos);
        for bit in 0..8 {
            let mut b = s.bytes.clone();
            b[pos] ^= 1 << bit;
            let a = Archive::from_bytes(&b).expect("open does not read BITMAPS");
            for i in 0..a.span_count() {
                let r = a.verify_span(SpanId(i));
                if SpanId(i) == owner {
                    let e = r.unwrap_err();
                    assert!(
                        matches!(e.kind, ErrorKind::SpanChecksum { span, .. } if span == owner.0),
                        "pos {pos} bit {bit}: {e}"
                    );
                } else {
                    r.unwrap();
                }
            }
            let e = a.verify_all().unwrap_err();
            assert!(
                matches!(e.kind, ErrorKind::SpanChecksum { span, .. } if span == owner.0),
                "{e}"
            );
            let arena = LoadedArena::from_bytes(&b).expect("open does not read BITMAPS");
            let r = arena.load_span::<Infallible>(owner, &mut |_| Ok(()), &mut |_, _| Ok(8));
            assert!(
                matches!(r, Err(LoadError::Arena(ref e)) if matches!(e.kind, ErrorKind::SpanChecksum { .. })),
                "pos {pos} bit {bit}"
            );
            assert!(!arena.is_loaded(owner));
            // From a file, with both strategies (once per byte is enough).
            if bit == 0 {
                std::fs::write(&path, &b).unwrap();
                for strategy in [LoadStrategy::Map, LoadStrategy::Read] {
                    let arena = LoadedArena::open(&path, strategy).expect("open");
                    let r =
                        arena.load_span::<Infallible>(owner, &mut |_| Ok(()), &mut |_, _| Ok(8));
                    assert!(
                        matches!(r, Err(LoadError::Arena(ref e)) if matches!(e.kind, ErrorKind::SpanChecksum { .. })),
                        "{strategy:?} pos {pos}"
                    );
                    // A span that neither is nor depends on the owner still loads.
                    for i in 0..arena.archive().span_count() {
                        let deps = arena.archive().span(SpanId(i)).unwrap().deps.to_vec();
                        if SpanId(i) != owner && !deps.contains(&owner) {
                            arena
                                .load_span::<Infallible>(SpanId(i), &mut |_| Ok(()), &mut |_, _| {
                                    Ok(8)
                                })
                                .unwrap();
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn bitmaps_section_crc_is_checked_by_the_full_check_only() {
    // ARENA-SEC-008: a wrong BITMAPS CRC in the section table (with the section table CRC and
    // the header CRC recomputed) passes open and every span, and fails `verify_all`.
    let s = sample();
    let mut b = s.bytes.clone();
    let h = header_of(&b);
    let ts = h.tables_start.get() as usize;
    let n = h.section_count.get() as usize;
    let mut entries = <[layout::SectionEntry]>::ref_from_bytes(&b[ts..ts + 24 * n])
        .unwrap()
        .to_vec();
    let e = entries
        .iter_mut()
        .find(|e| e.kind.get() == layout::SECTION_BITMAPS)
        .unwrap();
    e.crc = U32::new(e.crc.get() ^ 1);
    b[ts..ts + 24 * n].copy_from_slice(entries.as_bytes());
    let table_crc = layout::crc32(entries.as_bytes());
    patch_header(&mut b, |h| h.section_table_crc = U32::new(table_crc));

    let a = Archive::from_bytes(&b).expect("BITMAPS CRC is not checked at open");
    for i in 0..a.span_count() {
        a.verify_span(SpanId(i)).unwrap();
    }
    let e = a.verify_all().unwrap_err();
    assert!(
        matches!(
            e.kind,
            ErrorKind::TableChecksum {
                section: layout::SECTION_BITMAPS,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(
        e.offset,
        Some(section_range(&b, layout::SECTION_BITMAPS).0 as u64)
    );
    // A loader never checks it: every span loads.
    let arena = LoadedArena::from_bytes(&b).unwrap();
    for i in 0..a.span_count() {
        arena
            .load_span::<Infallible>(SpanId(i), &mut |_| Ok(()), &mut |_, _| Ok(8))
            .unwrap();
    }
}

/// Inserts `extra` zero bytes at the end of the BITMAPS section (shifting the later sections and
/// growing the file), then fixes every CRC: BITMAPS then holds bytes that belong to no span.
fn grow_bitmaps(bytes: &[u8], extra: usize) -> Vec<u8> {
    assert_eq!(extra % 8, 0);
    let h = header_of(bytes);
    let ts = h.tables_start.get() as usize;
    let n = h.section_count.get() as usize;
    let (bo, bl) = section_range(bytes, layout::SECTION_BITMAPS);
    let mut b = bytes.to_vec();
    b.splice(bo + bl..bo + bl, std::iter::repeat(0u8).take(extra));
    let mut entries = <[layout::SectionEntry]>::ref_from_bytes(&b[ts..ts + 24 * n])
        .unwrap()
        .to_vec();
    for e in &mut entries {
        if e.kind.get() == layout::SECTION_BITMAPS {
            e.len = U64::new(e.len.get() + extra as u64);
        } else if e.kind.get() > layout::SECTION_BITMAPS {
            e.offset = U64::new(e.offset.get() + extra as u64);
        }
    }
    b[ts..ts + 24 * n].copy_from_slice(entries.as_bytes());
    let len = b.len() as u64;
    patch_header(&mut b, |h| {
        h.file_len = U64::new(len);
        h.tables_len = U64::new(h.tables_len.get() + extra as u64);
    });
    fix_crcs(&b, |_| {})
}

#[test]
fn span_bitmaps_must_tile_bitmaps() {
    // ARENA-TAB-010, checked at open from the SPANS table only.
    let s = sample();
    // The writer satisfies it (and so do the gold files: tests/golden.rs).
    let spans = span_entries(&s.bytes);
    let mut expect = 0;
    for e in &spans {
        assert_eq!(e.bitmap_off.get(), expect);
        expect += 2 * e.bitmap_len.get();
    }
    assert_eq!(
        expect as usize,
        section_range(&s.bytes, layout::SECTION_BITMAPS).1
    );

    let (so, _) = section_range(&s.bytes, layout::SECTION_SPANS);
    let set_off = |i: usize, off: u64| {
        fix_crcs(&s.bytes, |b| {
            let o = so + 56 * i + 16;
            b[o..o + 8].copy_from_slice(&off.to_le_bytes());
        })
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.arena");
    let rejected_everywhere = |b: &[u8]| -> ArenaError {
        assert!(LoadedArena::from_bytes(b).is_err());
        std::fs::write(&path, b).unwrap();
        for strategy in [LoadStrategy::Map, LoadStrategy::Read] {
            assert!(LoadedArena::open(&path, strategy).unwrap_err().is_corrupt());
        }
        err(b)
    };
    // Overlap: span 1 shares span 0's bitmaps (each span CRC would still match its bytes).
    let e = rejected_everywhere(&set_off(1, 0));
    assert!(matches!(e.kind, ErrorKind::Overlap { .. }), "{e}");
    assert_eq!(e.offset, Some(so as u64 + 56 + 16));
    // Overlap: span 2's pair starts inside span 1's.
    let e = rejected_everywhere(&set_off(2, spans[1].bitmap_off.get() + 8));
    assert!(matches!(e.kind, ErrorKind::Overlap { .. }), "{e}");
    // Gap: span 0 does not start at 0 (span 1's pair is still inside BITMAPS).
    let e = rejected_everywhere(&set_off(0, 8));
    assert!(
        matches!(
            e.kind,
            ErrorKind::BadLayout {
                field: "span bitmaps must tile BITMAPS without gaps"
            }
        ),
        "{e}"
    );
    // ARENA-TAB-005 comes first: a pair outside BITMAPS.
    let e = err(&set_off(2, 1 << 20));
    assert!(matches!(e.kind, ErrorKind::OutOfBounds { .. }), "{e}");
    // Trailing bytes: BITMAPS longer than the spans' pairs.
    let grown = grow_bitmaps(&s.bytes, 8);
    let e = rejected_everywhere(&grown);
    assert!(
        matches!(
            e.kind,
            ErrorKind::BadLayout {
                field: "span bitmaps must fill BITMAPS exactly"
            }
        ),
        "{e}"
    );
    // `grow_bitmaps` itself keeps everything else valid: growing by 0 is the identity.
    assert_eq!(grow_bitmaps(&s.bytes, 0), s.bytes);
}

#[test]
fn every_bit_flip_inside_spans_is_caught_by_verify_and_load() {
    // ARENA-SPAN-001
    let s = sample();
    let a = Archive::from_bytes(&s.bytes).unwrap();
    let heap = a.heap_range();
    for pos in heap.start as usize..heap.end as usize {
        let span = (0..a.span_count())
            .map(SpanId)
            .find(|&id| {
                let i = a.span(id).unwrap();
                (i.start..i.start + i.len).contains(&(pos as u64))
            })
            .unwrap();
        for bit in 0..8 {
            let mut b = s.bytes.clone();
            b[pos] ^= 1 << bit;
            // Header and tables are intact: the archive opens (cost independent of the heap).
            let a2 = Archive::from_bytes(&b).expect("tables still valid");
            let e = a2.verify_span(span).unwrap_err();
            assert!(
                matches!(e.kind, ErrorKind::SpanChecksum { .. }),
                "pos {pos} bit {bit}: {e}"
            );
            assert!(a2.verify_all().is_err());
            let arena = LoadedArena::from_bytes(&b).unwrap();
            let r = arena.load_span::<Infallible>(span, &mut |_| Ok(()), &mut |_, _| Ok(8));
            assert!(matches!(r, Err(LoadError::Arena(ref e)) if e.is_corrupt()));
            assert!(!arena.is_loaded(span));
        }
    }
}

#[test]
fn span_corruption_with_fixed_crc_is_caught_by_slot_checks() {
    // ARENA-SPAN-003/004/005: make a slot bad and recompute the span CRC (and the SPANS section
    // CRC, and the section table CRC, and the header CRC) so only the slot check can catch it.
    let s = sample();
    let a = Archive::from_bytes(&s.bytes).unwrap();
    let (slot, _) = s.internal[0];
    // An internal target outside span 0 and its (no) deps.
    let bad = fix_crcs(&s.bytes, |b| {
        b[slot as usize..slot as usize + 8].copy_from_slice(&(a.file_len() + 5).to_le_bytes())
    });
    let a2 = Archive::from_bytes(&bad).unwrap();
    let e = a2.verify_span(SpanId(0)).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::BadSlot { span: 0, .. }), "{e}");
    // An extern id out of range.
    let (eslot, _) = s.external[0];
    let bad = fix_crcs(&s.bytes, |b| {
        b[eslot as usize..eslot as usize + 8].copy_from_slice(&7u64.to_le_bytes())
    });
    let e = Archive::from_bytes(&bad)
        .unwrap()
        .verify_span(SpanId(0))
        .unwrap_err();
    assert!(
        matches!(e.kind, ErrorKind::BadExternId { span: 0, id: 7, .. }),
        "{e}"
    );
    // Span 2 may point into 0 and 1 (its deps); span 1 must not point into span 0.
    let (s1slot, _) = s.internal[1];
    let bad = fix_crcs(&s.bytes, |b| {
        b[s1slot as usize..s1slot as usize + 8].copy_from_slice(&128u64.to_le_bytes())
    });
    let e = Archive::from_bytes(&bad)
        .unwrap()
        .verify_span(SpanId(1))
        .unwrap_err();
    assert!(
        matches!(
            e.kind,
            ErrorKind::BadSlot {
                span: 1,
                value: 128,
                ..
            }
        ),
        "{e}"
    );
    let arena = LoadedArena::from_bytes(&bad).unwrap();
    assert!(arena
        .load_span::<Infallible>(SpanId(2), &mut |_| Ok(()), &mut |_, _| Ok(8))
        .is_err());
    assert!(!arena.is_loaded(SpanId(1)) && !arena.is_loaded(SpanId(2)));
}

/// Applies `f` to a copy of `bytes`, then recomputes every span CRC, section CRC, the section
/// table CRC and the header CRC (skipping whatever is out of range: the helper itself must not
/// panic on the garbage the random test feeds it).
fn fix_crcs(bytes: &[u8], f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut b = bytes.to_vec();
    f(&mut b);
    let _ = try_fix_crcs(&mut b);
    b
}

fn try_fix_crcs(b: &mut [u8]) -> Option<()> {
    use layout::{SectionEntry, SpanEntry};
    let h = Header::read_from_prefix(b).ok()?.0;
    let ts = usize::try_from(h.tables_start.get()).ok()?;
    let count = h.section_count.get() as usize;
    let table_end = ts.checked_add(count.checked_mul(24)?)?;
    let entries: Vec<SectionEntry> = <[SectionEntry]>::ref_from_bytes(b.get(ts..table_end)?)
        .ok()?
        .to_vec();
    let sec = |kind: u32| {
        let e = entries.iter().find(|e| e.kind.get() == kind)?;
        Some((
            usize::try_from(e.offset.get()).ok()?,
            usize::try_from(e.len.get()).ok()?,
        ))
    };
    let range = |o: usize, l: usize| o..o.saturating_add(l);
    if let (Some((so, sl)), Some((bo, _)), Some((mo, _))) = (
        sec(layout::SECTION_SPANS),
        sec(layout::SECTION_BITMAPS),
        sec(layout::SECTION_META),
    ) {
        if let Some(raw) = b.get(range(so, sl)) {
            if let Ok(spans) = <[SpanEntry]>::ref_from_bytes(raw) {
                let mut spans = spans.to_vec();
                for sp in &mut spans {
                    let st = usize::try_from(sp.start.get()).ok()?;
                    let len = usize::try_from(sp.len.get()).ok()?;
                    let boff = bo.checked_add(usize::try_from(sp.bitmap_off.get()).ok()?)?;
                    let blen = usize::try_from(sp.bitmap_len.get()).ok()?.checked_mul(2)?;
                    let moff = mo.checked_add(sp.meta_off.get() as usize)?;
                    let mlen = sp.meta_len.get() as usize;
                    let (Some(x), Some(y), Some(z)) = (
                        b.get(range(st, len)),
                        b.get(range(boff, blen)),
                        b.get(range(moff, mlen)),
                    ) else {
                        continue;
                    };
                    let mut hsr = crc32fast::Hasher::new();
                    hsr.update(x);
                    hsr.update(y);
                    hsr.update(z);
                    sp.crc = U32::new(hsr.finalize());
                }
                b.get_mut(range(so, sl))?.copy_from_slice(spans.as_bytes());
            }
        }
    }
    let mut entries = entries;
    for e in &mut entries {
        let (Ok(o), Ok(l)) = (
            usize::try_from(e.offset.get()),
            usize::try_from(e.len.get()),
        ) else {
            continue;
        };
        if let Some(sec) = b.get(range(o, l)) {
            e.crc = U32::new(layout::crc32(sec));
        }
    }
    b.get_mut(ts..table_end)?
        .copy_from_slice(entries.as_bytes());
    let table_crc = layout::crc32(entries.as_bytes());
    if b.len() >= 128 {
        patch_header(b, |h| h.section_table_crc = U32::new(table_crc));
    }
    Some(())
}

#[test]
fn fix_crcs_is_identity_on_valid_archives() {
    let s = sample();
    assert_eq!(fix_crcs(&s.bytes, |_| {}), s.bytes);
}

#[test]
fn bad_magic() {
    // ARENA-HDR-002
    let mut b = sample().bytes;
    b[1] = b'B';
    let e = err(&b);
    assert!(matches!(e.kind, ErrorKind::BadMagic));
    assert!(e.is_corrupt() && !e.is_incompatible());
}

#[test]
fn major_version_mismatch_is_incompatible() {
    // ARENA-HDR-003: checked before the header CRC, so even an unpatched CRC reports the version.
    for major in [0u16, 2, 0xffff] {
        let mut b = sample().bytes;
        b[8..10].copy_from_slice(&major.to_le_bytes());
        let e = err(&b);
        assert!(
            matches!(e.kind, ErrorKind::UnsupportedVersion { major: m, minor: 0 } if m == major)
        );
        assert!(e.is_incompatible() && !e.is_corrupt());
        let mut b = sample().bytes;
        patch_header(&mut b, |h| h.format_major = U16::new(major));
        assert!(err(&b).is_incompatible());
    }
}

#[test]
fn newer_minor_version_is_accepted() {
    // ARENA-HDR-003: any minor of a known major is read.
    let mut b = sample().bytes;
    patch_header(&mut b, |h| h.format_minor = U16::new(7));
    let a = Archive::from_bytes(&b).unwrap();
    assert_eq!(a.format_version(), (1, 7));
}

#[test]
fn unknown_incompat_flags_are_incompatible() {
    // ARENA-HDR-004
    for bit in 0..32 {
        let mut b = sample().bytes;
        patch_header(&mut b, |h| h.incompat_flags = U32::new(1 << bit));
        let e = err(&b);
        assert!(matches!(e.kind, ErrorKind::UnknownIncompatFlags(f) if f == 1 << bit));
        assert!(e.is_incompatible());
    }
}

#[test]
fn unknown_compat_flags_are_ignored() {
    let mut b = sample().bytes;
    patch_header(&mut b, |h| h.compat_flags = U32::new(0xffff_ffff));
    assert_eq!(Archive::from_bytes(&b).unwrap().compat_flags(), 0xffff_ffff);
}

#[test]
fn profile_mismatch_is_incompatible() {
    let s = sample();
    let a = Archive::from_bytes(&s.bytes).unwrap();
    a.check_profile(&PROFILE).unwrap();
    let e = a.check_profile(&[0; 32]).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::ProfileMismatch));
    assert!(e.is_incompatible() && !e.is_corrupt());
}

#[test]
fn header_len_checked() {
    // ARENA-HDR-005
    let mut b = sample().bytes;
    patch_header(&mut b, |h| h.header_len = U32::new(256));
    assert!(matches!(err(&b).kind, ErrorKind::BadHeaderLen(256)));
}

#[test]
fn header_crc_checked() {
    // ARENA-HDR-006
    let mut b = sample().bytes;
    b[64] ^= 1; // preferred_base
    assert!(matches!(err(&b).kind, ErrorKind::HeaderChecksum { .. }));
}

#[test]
fn reserved_header_bytes_must_be_zero() {
    // ARENA-HDR-008
    let mut b = sample().bytes;
    patch_header(&mut b, |h| h.reserved = [0, 0, 1, 0]);
    assert!(matches!(
        err(&b).kind,
        ErrorKind::ReservedNonZero {
            field: "header.reserved"
        }
    ));
}

#[test]
fn layout_rules() {
    // ARENA-LAY-001
    let mut b = sample().bytes;
    patch_header(&mut b, |h| h.heap_start = U64::new(136));
    assert!(matches!(err(&b).kind, ErrorKind::BadLayout { .. }));
    // ARENA-LAY-002
    let mut b = sample().bytes;
    patch_header(&mut b, |h| h.heap_len = U64::new(h.heap_len.get() + 4));
    assert!(matches!(
        err(&b).kind,
        ErrorKind::Misaligned {
            what: "heap_len",
            ..
        }
    ));
    let mut b = sample().bytes;
    patch_header(&mut b, |h| h.heap_len = U64::new(u64::MAX - 7));
    assert!(matches!(err(&b).kind, ErrorKind::OutOfBounds { .. }));
    // ARENA-LAY-003
    let mut b = sample().bytes;
    patch_header(&mut b, |h| {
        h.tables_start = U64::new(h.tables_start.get() - 8)
    });
    assert!(matches!(err(&b).kind, ErrorKind::Overlap { .. }));
    // ARENA-LAY-004
    let mut b = sample().bytes;
    patch_header(&mut b, |h| h.tables_len = U64::new(h.tables_len.get() - 8));
    assert!(matches!(err(&b).kind, ErrorKind::BadLayout { .. }));
    let mut b = sample().bytes;
    patch_header(&mut b, |h| h.tables_len = U64::new(u64::MAX));
    assert!(matches!(err(&b).kind, ErrorKind::OutOfBounds { .. }));
}

#[test]
fn section_table_rules() {
    // ARENA-SEC-001
    let mut b = sample().bytes;
    patch_header(&mut b, |h| h.section_count = U32::new(u32::MAX));
    assert!(matches!(err(&b).kind, ErrorKind::OutOfBounds { .. }));
    let mut b = sample().bytes;
    patch_header(&mut b, |h| {
        h.section_table_offset = U64::new(h.section_table_offset.get() + 8)
    });
    assert!(matches!(err(&b).kind, ErrorKind::BadLayout { .. }));
    // ARENA-SEC-002
    let mut b = sample().bytes;
    patch_header(&mut b, |h| {
        h.section_table_crc = U32::new(h.section_table_crc.get() ^ 1)
    });
    assert!(matches!(
        err(&b).kind,
        ErrorKind::TableChecksum { section: 0, .. }
    ));
    // ARENA-SEC-003: drop the last section (ARCHIVE_META) from the table.
    let mut b = sample().bytes;
    patch_header(&mut b, |h| h.section_count = U32::new(8));
    let fixed = {
        let h = header_of(&b);
        let ts = h.tables_start.get() as usize;
        let crc = layout::crc32(&b[ts..ts + 8 * 24]);
        let mut b2 = b.clone();
        patch_header(&mut b2, |h| h.section_table_crc = U32::new(crc));
        b2
    };
    let e = err(&fixed);
    assert!(
        matches!(e.kind, ErrorKind::MissingSection { section: 9 }),
        "{e}"
    );
}

#[test]
fn section_crc_checked() {
    // ARENA-SEC-006: a flip in the producer section.
    let s = sample();
    let pos = s
        .bytes
        .windows(b"pycds-arena tests".len())
        .position(|w| w == b"pycds-arena tests")
        .unwrap();
    let mut b = s.bytes.clone();
    b[pos] ^= 0x20;
    assert!(matches!(
        err(&b).kind,
        ErrorKind::TableChecksum { section: 8, .. }
    ));
}

#[test]
fn table_entry_rules_with_fixed_crcs() {
    use layout::{RootEntry, SectionEntry, SpanEntry};
    let s = sample();
    let h = header_of(&s.bytes);
    let ts = h.tables_start.get() as usize;
    let entries: Vec<SectionEntry> = <[SectionEntry]>::ref_from_bytes(&s.bytes[ts..ts + 24 * 9])
        .unwrap()
        .to_vec();
    let sec = |kind: u32| entries[kind as usize - 1].offset.get() as usize;
    let spans = sec(layout::SECTION_SPANS);
    let roots = sec(layout::SECTION_ROOTS);
    let deps = sec(layout::SECTION_DEPS);

    let with = |f: &dyn Fn(&mut Vec<u8>)| err(&fix_crcs(&s.bytes, |b| f(b)));
    let span_at = |b: &mut Vec<u8>, i: usize, g: &dyn Fn(&mut SpanEntry)| {
        let o = spans + 56 * i;
        let mut e = SpanEntry::read_from_bytes(&b[o..o + 56]).unwrap();
        g(&mut e);
        b[o..o + 56].copy_from_slice(e.as_bytes());
    };
    let root_at = |b: &mut Vec<u8>, i: usize, g: &dyn Fn(&mut RootEntry)| {
        let o = roots + 32 * i;
        let mut e = RootEntry::read_from_bytes(&b[o..o + 32]).unwrap();
        g(&mut e);
        b[o..o + 32].copy_from_slice(e.as_bytes());
    };

    // ARENA-TAB-002: reserved, alignment, tiling.
    let e = with(&|b| span_at(b, 0, &|e| e.reserved = U32::new(1)));
    assert!(
        matches!(
            e.kind,
            ErrorKind::ReservedNonZero {
                field: "span.reserved"
            }
        ),
        "{e}"
    );
    let e = with(&|b| span_at(b, 1, &|e| e.start = U64::new(e.start.get() + 4)));
    assert!(matches!(e.kind, ErrorKind::Misaligned { .. }), "{e}");
    let e = with(&|b| span_at(b, 1, &|e| e.start = U64::new(e.start.get() - 8)));
    assert!(matches!(e.kind, ErrorKind::Overlap { .. }), "{e}");
    let e = with(&|b| span_at(b, 0, &|e| e.len = U64::new(e.len.get() - 8)));
    assert!(e.is_corrupt(), "{e}");
    let e = with(&|b| span_at(b, 2, &|e| e.len = U64::new(e.len.get() + 8)));
    assert!(matches!(e.kind, ErrorKind::OutOfBounds { .. }), "{e}");
    // ARENA-TAB-003
    let e = with(&|b| span_at(b, 2, &|e| e.deps_count = U32::new(9)));
    assert!(matches!(e.kind, ErrorKind::OutOfBounds { .. }), "{e}");
    // ARENA-TAB-004: a dependency on itself, and unsorted deps.
    let e = with(&|b| b[deps..deps + 4].copy_from_slice(&2u32.to_le_bytes()));
    assert!(
        matches!(e.kind, ErrorKind::BadDependency { span: 2, dep: 2 }),
        "{e}"
    );
    let e = with(&|b| b[deps..deps + 4].copy_from_slice(&1u32.to_le_bytes()));
    assert!(
        matches!(e.kind, ErrorKind::BadDependency { span: 2, dep: 1 }),
        "{e}"
    );
    // ARENA-TAB-005
    let e = with(&|b| span_at(b, 0, &|e| e.bitmap_len = U64::new(16)));
    assert!(matches!(e.kind, ErrorKind::BadBitmap { span: 0 }), "{e}");
    let e = with(&|b| span_at(b, 0, &|e| e.bitmap_off = U64::new(4)));
    assert!(matches!(e.kind, ErrorKind::Misaligned { .. }), "{e}");
    let e = with(&|b| span_at(b, 0, &|e| e.bitmap_off = U64::new(1 << 40)));
    assert!(matches!(e.kind, ErrorKind::OutOfBounds { .. }), "{e}");
    // ARENA-TAB-006
    let e = with(&|b| span_at(b, 0, &|e| e.meta_len = U32::new(u32::MAX)));
    assert!(
        matches!(
            e.kind,
            ErrorKind::OutOfBounds {
                what: "span meta",
                ..
            }
        ),
        "{e}"
    );
    // ARENA-TAB-007
    let e = with(&|b| root_at(b, 0, &|e| e.reserved = U32::new(3)));
    assert!(matches!(e.kind, ErrorKind::ReservedNonZero { .. }), "{e}");
    let e = with(&|b| root_at(b, 0, &|e| e.span = U32::new(3)));
    assert!(
        matches!(
            e.kind,
            ErrorKind::OutOfBounds {
                what: "root span id",
                ..
            }
        ),
        "{e}"
    );
    let e = with(&|b| root_at(b, 0, &|e| e.span = U32::new(2)));
    assert!(
        matches!(
            e.kind,
            ErrorKind::OutOfBounds {
                what: "root object outside its span",
                ..
            }
        ),
        "{e}"
    );
    let e = with(&|b| root_at(b, 1, &|e| e.name_len = U32::new(1000)));
    assert!(
        matches!(
            e.kind,
            ErrorKind::OutOfBounds {
                what: "root name",
                ..
            }
        ),
        "{e}"
    );
    // ARENA-TAB-008: duplicate (same name slice) and unsorted names.
    let e = with(&|b| {
        let o = roots;
        let first = RootEntry::read_from_bytes(&b[o..o + 32]).unwrap();
        root_at(b, 1, &|e| {
            e.name_off = first.name_off;
            e.name_len = first.name_len;
        })
    });
    assert!(matches!(e.kind, ErrorKind::DuplicateRoot), "{e}");
    let e = with(&|b| {
        let (r0, r2) = (
            &b[roots..roots + 32].to_vec(),
            &b[roots + 64..roots + 96].to_vec(),
        );
        b[roots..roots + 32].copy_from_slice(r2);
        b[roots + 64..roots + 96].copy_from_slice(r0);
    });
    assert!(matches!(e.kind, ErrorKind::BadLayout { .. }), "{e}");
}

#[test]
fn producer_rules() {
    // ARENA-TAB-009: the builder refuses long producers, so check non-UTF-8 via a patched file.
    let s = sample();
    let pos = s
        .bytes
        .windows(b"pycds-arena tests".len())
        .position(|w| w == b"pycds-arena tests")
        .unwrap();
    let bad = fix_crcs(&s.bytes, |b| b[pos] = 0xff);
    assert!(matches!(err(&bad).kind, ErrorKind::BadUtf8));
}

#[test]
fn random_bytes_never_panic() {
    // Cheap fuzz: random mutations of a valid archive (several bytes at once, with and without
    // fixed CRCs) must give Ok or Err, never a panic, and Ok archives must verify or fail cleanly.
    let s = sample();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.arena");
    for round in 0..3000 {
        let mut b = s.bytes.clone();
        for _ in 0..1 + next() % 4 {
            let pos = (next() % b.len() as u64) as usize;
            b[pos] = next() as u8;
        }
        let b = if round % 2 == 0 {
            fix_crcs(&b, |_| {})
        } else {
            b
        };
        // Every way of opening agrees with `Archive::from_bytes` (the loaders validate the
        // tables without the BITMAPS section, which they do not read at open).
        let opens = Archive::from_bytes(&b).is_ok();
        assert_eq!(LoadedArena::from_bytes(&b).is_ok(), opens, "round {round}");
        if round % 8 == 0 {
            std::fs::write(&path, &b).unwrap();
            for strategy in [LoadStrategy::Map, LoadStrategy::Read] {
                let r = LoadedArena::open(&path, strategy);
                assert_eq!(r.is_ok(), opens, "round {round} {strategy:?}: {r:?}");
            }
        }
        if let Ok(a) = Archive::from_bytes(&b) {
            let _ = a.verify_all();
            for i in 0..a.root_count() {
                let _ = a.root(i);
            }
            if let Ok(arena) = LoadedArena::from_bytes(&b) {
                for i in 0..a.span_count() {
                    let _ =
                        arena.load_span::<Infallible>(SpanId(i), &mut |_| Ok(()), &mut |_, _| {
                            Ok(16)
                        });
                }
            }
        }
    }
}

#[test]
fn bitmap_padding_and_double_marking_are_caught() {
    use layout::SectionEntry;
    let s = sample();
    let h = header_of(&s.bytes);
    let ts = h.tables_start.get() as usize;
    let entries: Vec<SectionEntry> = <[SectionEntry]>::ref_from_bytes(&s.bytes[ts..ts + 24 * 9])
        .unwrap()
        .to_vec();
    let bitmaps = entries[layout::SECTION_BITMAPS as usize - 1].offset.get() as usize;
    // Span 0 is 24 bytes = 3 words: its internal bitmap is the first bitmap word, its external
    // bitmap the second. Word 2 is an internal slot (bit 2 of the internal bitmap).
    assert_eq!(s.bytes[bitmaps], 0b100);
    // ARENA-SPAN-002: a padding bit (word 5 does not exist).
    let bad = fix_crcs(&s.bytes, |b| b[bitmaps] |= 1 << 5);
    let e = Archive::from_bytes(&bad)
        .unwrap()
        .verify_span(SpanId(0))
        .unwrap_err();
    assert!(matches!(e.kind, ErrorKind::BadBitmap { span: 0 }), "{e}");
    // ARENA-SPAN-003: word 2 marked external as well.
    let bad = fix_crcs(&s.bytes, |b| b[bitmaps + 8] |= 1 << 2);
    let e = Archive::from_bytes(&bad)
        .unwrap()
        .verify_span(SpanId(0))
        .unwrap_err();
    assert!(matches!(e.kind, ErrorKind::BadSlot { span: 0, .. }), "{e}");
    let arena = LoadedArena::from_bytes(&bad).unwrap();
    assert!(arena
        .load_span::<Infallible>(SpanId(0), &mut |_| Ok(()), &mut |_, _| Ok(8))
        .is_err());
}
