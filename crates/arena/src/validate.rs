//! The ordered validation algorithm of `spec/format.md` ("Validation"), header and tables part.
//!
//! Each step has a requirement id (`ARENA-HDR-*`, `ARENA-LAY-*`, `ARENA-SEC-*`, `ARENA-TAB-*`),
//! listed in [`REQUIREMENTS`] in check order; tests cite them. The per-span checks
//! (`ARENA-SPAN-*`) live in [`crate::read`] (`Archive::verify_span`).
//!
//! Rules followed here: every offset computation is checked (`checked_add`, `checked_mul`), every
//! slice access goes through `.get()`, and nothing reads span contents or the BITMAPS section
//! (whose size is proportional to the heap: its CRC is not checked at open, `ARENA-SEC-006`; its
//! bytes are covered by the span CRCs, `ARENA-TAB-010`), so the cost depends on the size of the
//! other tables, not of the heap.
#![deny(clippy::indexing_slicing)]

use zerocopy::byteorder::little_endian::U32;
use zerocopy::FromBytes;

use crate::error::{ArenaError, ErrorKind};
use crate::layout::{
    self, ExternEntry, Header, RootEntry, SectionEntry, SpanEntry, FORMAT_MAJOR, HEADER_LEN,
    HEAP_START, KNOWN_INCOMPAT_FLAGS, MAGIC, MAX_PRODUCER_LEN, REQUIRED_SECTIONS,
    SECTION_ENTRY_LEN,
};
use crate::read::Archive;

/// The validation steps in the order they run, with a one-line statement each (the spec's
/// "Validation" chapter has the full text). Ids are stable: a new rule gets a new id at its place
/// in the order (`ARENA-TAB-010` runs right after `ARENA-TAB-005`). Steps up to `ARENA-TAB-009`
/// run at open; `ARENA-SPAN-*` per span before its first use; `ARENA-SEC-008` only in a full check
/// ([`Archive::verify_all`]).
pub const REQUIREMENTS: &[(&str, &str)] = &[
    ("ARENA-HDR-001", "the input is at least 128 bytes long"),
    ("ARENA-HDR-002", "bytes 0..8 equal the magic"),
    ("ARENA-HDR-003", "format_major is a supported major (1)"),
    (
        "ARENA-HDR-004",
        "incompat_flags has no bit unknown to the reader",
    ),
    ("ARENA-HDR-005", "header_len is 128"),
    ("ARENA-HDR-006", "header_crc matches"),
    ("ARENA-HDR-007", "file_len equals the actual length"),
    ("ARENA-HDR-008", "the header's reserved bytes are zero"),
    ("ARENA-LAY-001", "heap_start is 128"),
    (
        "ARENA-LAY-002",
        "heap_len is a multiple of 8 and the heap fits in the file",
    ),
    ("ARENA-LAY-003", "tables_start equals heap_start + heap_len"),
    ("ARENA-LAY-004", "tables_start + tables_len equals file_len"),
    (
        "ARENA-SEC-001",
        "the section table starts at tables_start and fits in the tables region",
    ),
    ("ARENA-SEC-002", "section_table_crc matches"),
    (
        "ARENA-SEC-003",
        "section kinds are non-zero, strictly increasing, all required kinds present",
    ),
    (
        "ARENA-SEC-004",
        "sections follow each other 8-aligned and fill the tables region exactly",
    ),
    (
        "ARENA-SEC-005",
        "padding between and after sections is zero",
    ),
    (
        "ARENA-SEC-006",
        "each section's CRC matches, except BITMAPS (checked by ARENA-SEC-008)",
    ),
    (
        "ARENA-SEC-007",
        "fixed-size-entry sections are a whole number of entries",
    ),
    ("ARENA-TAB-001", "extern names lie inside STRINGS"),
    (
        "ARENA-TAB-002",
        "span reserved fields are zero; spans are 8-aligned and tile the heap in order",
    ),
    ("ARENA-TAB-003", "span dependency lists lie inside DEPS"),
    (
        "ARENA-TAB-004",
        "dependency ids are strictly increasing and lower than the span's id",
    ),
    (
        "ARENA-TAB-005",
        "bitmaps have the right length and lie inside BITMAPS",
    ),
    (
        "ARENA-TAB-010",
        "span bitmaps tile BITMAPS exactly, in span order (no gaps, no overlaps)",
    ),
    ("ARENA-TAB-006", "span meta lies inside META"),
    (
        "ARENA-TAB-007",
        "root reserved fields are zero; names, meta, span id, object are in bounds",
    ),
    (
        "ARENA-TAB-008",
        "roots are sorted strictly by name (no duplicates)",
    ),
    (
        "ARENA-TAB-009",
        "the producer is UTF-8 of at most 255 bytes",
    ),
    ("ARENA-SPAN-001", "the span CRC matches"),
    ("ARENA-SPAN-002", "bitmap padding bits are zero"),
    (
        "ARENA-SPAN-003",
        "no word is marked both internal and external",
    ),
    (
        "ARENA-SPAN-004",
        "internal targets lie in the span or a direct dependency",
    ),
    ("ARENA-SPAN-005", "external ids are below the extern count"),
    (
        "ARENA-SEC-008",
        "the BITMAPS section's CRC matches (full check only, after every span)",
    ),
];

fn to_usize(x: u64) -> Option<usize> {
    usize::try_from(x).ok()
}

/// `[offset, offset + len)` must lie within `[0, limit)`; returns the end.
fn check_range(what: &'static str, offset: u64, len: u64, limit: u64) -> Result<u64, ArenaError> {
    match offset.checked_add(len) {
        Some(end) if end <= limit => Ok(end),
        _ => Err(ArenaError::at(
            ErrorKind::OutOfBounds {
                what,
                offset,
                len,
                limit,
            },
            offset,
        )),
    }
}

/// A sub-slice of a pool; `None` if out of bounds.
pub(crate) fn pool_get(pool: &[u8], off: u32, len: u32) -> Option<&[u8]> {
    let start = to_usize(u64::from(off))?;
    let end = start.checked_add(to_usize(u64::from(len))?)?;
    pool.get(start..end)
}

/// Steps `ARENA-HDR-001` .. `ARENA-LAY-004`: `bytes` starts with the header (at least 128
/// bytes are needed); `actual_len` is the real length of the file.
pub(crate) fn validate_header(bytes: &[u8], actual_len: u64) -> Result<Header, ArenaError> {
    // ARENA-HDR-001
    let header = match Header::read_from_prefix(bytes) {
        Ok((h, _)) if actual_len >= HEADER_LEN as u64 => h,
        _ => {
            return Err(ArenaError::at(
                ErrorKind::TooShort {
                    needed: HEADER_LEN as u64,
                    got: actual_len.min(bytes.len() as u64),
                },
                0,
            ))
        }
    };
    // ARENA-HDR-002
    if header.magic != MAGIC {
        return Err(ArenaError::at(ErrorKind::BadMagic, 0));
    }
    // ARENA-HDR-003
    if header.format_major.get() != FORMAT_MAJOR {
        return Err(ArenaError::at(
            ErrorKind::UnsupportedVersion {
                major: header.format_major.get(),
                minor: header.format_minor.get(),
            },
            8,
        ));
    }
    // ARENA-HDR-004
    let unknown = header.incompat_flags.get() & !KNOWN_INCOMPAT_FLAGS;
    if unknown != 0 {
        return Err(ArenaError::at(ErrorKind::UnknownIncompatFlags(unknown), 24));
    }
    // ARENA-HDR-005
    if header.header_len.get() != HEADER_LEN as u32 {
        return Err(ArenaError::at(
            ErrorKind::BadHeaderLen(header.header_len.get()),
            12,
        ));
    }
    // ARENA-HDR-006
    let actual = layout::header_crc(&header);
    if actual != header.header_crc.get() {
        return Err(ArenaError::at(
            ErrorKind::HeaderChecksum {
                expected: header.header_crc.get(),
                actual,
            },
            layout::HEADER_CRC_OFFSET as u64,
        ));
    }
    // ARENA-HDR-007
    let file_len = header.file_len.get();
    if file_len != actual_len {
        return Err(ArenaError::at(
            ErrorKind::LengthMismatch {
                header: file_len,
                actual: actual_len,
            },
            16,
        ));
    }
    // ARENA-HDR-008
    if header.reserved != [0; 4] {
        return Err(ArenaError::at(
            ErrorKind::ReservedNonZero {
                field: "header.reserved",
            },
            124,
        ));
    }
    // ARENA-LAY-001
    let heap_start = header.heap_start.get();
    if heap_start != HEAP_START {
        return Err(ArenaError::at(
            ErrorKind::BadLayout {
                field: "heap_start must be 128",
            },
            72,
        ));
    }
    // ARENA-LAY-002
    let heap_len = header.heap_len.get();
    if heap_len % 8 != 0 {
        return Err(ArenaError::at(
            ErrorKind::Misaligned {
                what: "heap_len",
                value: heap_len,
                align: 8,
            },
            80,
        ));
    }
    let heap_end = check_range("heap", heap_start, heap_len, file_len)?;
    // ARENA-LAY-003
    let tables_start = header.tables_start.get();
    if tables_start < heap_end {
        return Err(ArenaError::at(
            ErrorKind::Overlap {
                what: "tables overlap the heap",
            },
            88,
        ));
    }
    if tables_start != heap_end {
        return Err(ArenaError::at(
            ErrorKind::BadLayout {
                field: "tables_start must equal heap_start + heap_len",
            },
            88,
        ));
    }
    // ARENA-LAY-004
    let tables_len = header.tables_len.get();
    let tables_end = check_range("tables", tables_start, tables_len, file_len)?;
    if tables_end != file_len {
        return Err(ArenaError::at(
            ErrorKind::BadLayout {
                field: "tables_start + tables_len must equal file_len",
            },
            96,
        ));
    }
    Ok(header)
}

/// The BITMAPS section: where it is, its stored CRC, and its bytes if the caller provided them.
#[derive(Default)]
struct BitmapsSection<'a> {
    bytes: Option<&'a [u8]>,
    offset: u64,
    len: u64,
    crc: u32,
}

/// The sections of a validated table region.
#[derive(Default)]
struct Sections<'a> {
    strings: &'a [u8],
    externs: &'a [u8],
    spans: &'a [u8],
    deps: &'a [u8],
    roots: &'a [u8],
    meta: &'a [u8],
    producer: &'a [u8],
    archive_meta: &'a [u8],
    /// File offsets of the sections, for error reporting.
    offsets: [u64; 10],
}

fn table_slice<T: FromBytes + zerocopy::KnownLayout + zerocopy::Immutable>(
    bytes: &[u8],
    section: u32,
    offset: u64,
) -> Result<&[T], ArenaError> {
    <[T]>::ref_from_bytes(bytes).map_err(|_| {
        ArenaError::at(
            ErrorKind::BadTableLen {
                section,
                len: bytes.len() as u64,
            },
            offset,
        )
    })
}

/// The bytes of the tables region `[tables_start, file_len)` given to [`validate_tables`]: all of
/// them, or all but the BITMAPS section (a *hole* the loader has not read, and must be able to
/// write later without aliasing the `Archive`'s views).
#[derive(Clone, Copy, Debug)]
pub(crate) struct TablesBytes<'a> {
    /// `[tables_start, tables_start + head.len())`.
    pub(crate) head: &'a [u8],
    /// Length of the unavailable range right after `head` (`None`: no hole, `tail` is empty).
    pub(crate) hole: Option<u64>,
    /// The bytes after the hole, up to the end of the tables region.
    pub(crate) tail: &'a [u8],
    /// The caller checked the STRINGS section's CRC on its real bytes and gives here only the
    /// parts the archive must view (root names; the extern names stay out of memory): the CRC
    /// is not checked again on these bytes.
    pub(crate) strings_verified: bool,
}

impl<'a> TablesBytes<'a> {
    /// The whole tables region.
    pub(crate) fn whole(bytes: &'a [u8]) -> Self {
        TablesBytes {
            head: bytes,
            hole: None,
            tail: &[],
            strings_verified: false,
        }
    }

    fn len(&self) -> Option<u64> {
        (self.head.len() as u64)
            .checked_add(self.hole.unwrap_or(0))?
            .checked_add(self.tail.len() as u64)
    }
}

/// Where the BITMAPS section lies, as `(file offset, length)`, judging only from the section table
/// `section_table` (the `section_count * 24` bytes at `tables_start` of a file whose header passed
/// [`validate_header`]): walks the entries as `ARENA-SEC-004` does and returns the first BITMAPS
/// entry if every entry up to it is placed correctly. `None` when the walk fails, in which case
/// `validate_tables` rejects the file. When it succeeds, the range is exactly the BITMAPS section
/// of any file that passes `validate_tables` (which repeats the walk over the same bytes), is
/// inside the tables region after the section table, and overlaps no other section or padding.
/// Lets a loader skip reading (and aliasing) the BITMAPS section at open.
pub(crate) fn bitmaps_section(header: &Header, section_table: &[u8]) -> Option<(u64, u64)> {
    section_range(header, section_table, layout::SECTION_BITMAPS)
}

/// Where the section of `kind` lies, as `(file offset, length)`, judging only from the section
/// table, as [`bitmaps_section`] does for BITMAPS (same walk, same guarantees).
pub(crate) fn section_range(
    header: &Header,
    section_table: &[u8],
    kind: u32,
) -> Option<(u64, u64)> {
    let tables_start = header.tables_start.get();
    let tables_end = tables_start.checked_add(header.tables_len.get())?;
    let st_len = u64::from(header.section_count.get()).checked_mul(SECTION_ENTRY_LEN)?;
    if section_table.len() as u64 != st_len {
        return None;
    }
    let entries = <[SectionEntry]>::ref_from_bytes(section_table).ok()?;
    let mut cursor = tables_start.checked_add(st_len)?;
    if cursor > tables_end {
        return None;
    }
    for e in entries {
        let (off, len) = (e.offset.get(), e.len.get());
        if off != layout::align8(cursor)? {
            return None;
        }
        let end = off.checked_add(len)?;
        if end > tables_end {
            return None;
        }
        if e.kind.get() == kind {
            return Some((off, len));
        }
        cursor = end;
    }
    None
}

/// Steps `ARENA-SEC-001` .. `ARENA-TAB-009`: `tables` are the bytes of the tables region
/// `[tables_start, file_len)` of a file whose header passed [`validate_header`], possibly without
/// the BITMAPS section (whose contents these steps do not need); `heap` is the heap region when
/// the whole file is in memory.
pub(crate) fn validate_tables<'a>(
    header: Header,
    tables: TablesBytes<'a>,
    heap: Option<&'a [u8]>,
) -> Result<Archive<'a>, ArenaError> {
    let tables_start = header.tables_start.get();
    let tables_len = header.tables_len.get();
    let got = tables.len().unwrap_or(u64::MAX);
    if got != tables_len {
        return Err(ArenaError::at(
            ErrorKind::TooShort {
                needed: tables_len,
                got,
            },
            tables_start,
        ));
    }
    let tables_end = tables_start
        .checked_add(tables_len)
        .ok_or(ErrorKind::BadLayout { field: "tables" })?;
    let head_len = tables.head.len() as u64;
    let tail_from = head_len.saturating_add(tables.hole.unwrap_or(0));
    // Maps a base-relative range inside the tables region to a slice; `Ok(None)` when the range
    // is exactly the hole (the BITMAPS section, not read), an error when it straddles the hole.
    let region_opt =
        |off: u64, len: u64, what: &'static str| -> Result<Option<&'a [u8]>, ArenaError> {
            let end = check_range(what, off, len, tables_end)?;
            if off < tables_start {
                return Err(ArenaError::at(
                    ErrorKind::OutOfBounds {
                        what,
                        offset: off,
                        len,
                        limit: tables_end,
                    },
                    off,
                ));
            }
            let (rel, rel_end) = (off - tables_start, end - tables_start);
            let slice = |bytes: &'a [u8], from: u64| {
                to_usize(rel - from)
                    .zip(to_usize(rel_end - from))
                    .and_then(|(s, e)| bytes.get(s..e))
            };
            let got = if rel_end <= head_len {
                slice(tables.head, 0)
            } else if rel >= tail_from {
                slice(tables.tail, tail_from)
            } else if tables.hole.is_some() && rel == head_len && rel_end == tail_from {
                return Ok(None);
            } else {
                None
            };
            got.map(Some)
                .ok_or_else(|| ArenaError::at(ErrorKind::BadLayout { field: what }, off))
        };
    let region = |off: u64, len: u64, what: &'static str| -> Result<&'a [u8], ArenaError> {
        region_opt(off, len, what)?
            .ok_or_else(|| ArenaError::at(ErrorKind::BadLayout { field: what }, off))
    };

    // ARENA-SEC-001
    let st_off = header.section_table_offset.get();
    if st_off != tables_start {
        return Err(ArenaError::at(
            ErrorKind::BadLayout {
                field: "section_table_offset must equal tables_start",
            },
            104,
        ));
    }
    let count = header.section_count.get();
    let st_len = u64::from(count)
        .checked_mul(SECTION_ENTRY_LEN)
        .ok_or(ErrorKind::BadLayout {
            field: "section_count",
        })?;
    let st_bytes = region(st_off, st_len, "section table")?;
    // ARENA-SEC-002
    let actual = layout::crc32(st_bytes);
    if actual != header.section_table_crc.get() {
        return Err(ArenaError::at(
            ErrorKind::TableChecksum {
                section: layout::SECTION_TABLE,
                expected: header.section_table_crc.get(),
                actual,
            },
            st_off,
        ));
    }
    let entries: &[SectionEntry] = table_slice(st_bytes, layout::SECTION_TABLE, st_off)?;

    // ARENA-SEC-003
    let mut prev_kind = 0u32;
    for (i, e) in entries.iter().enumerate() {
        let kind = e.kind.get();
        if kind <= prev_kind {
            return Err(ArenaError::at(
                ErrorKind::BadLayout {
                    field: "section kinds must be non-zero and strictly increasing",
                },
                st_off + i as u64 * SECTION_ENTRY_LEN,
            ));
        }
        prev_kind = kind;
    }
    for kind in REQUIRED_SECTIONS {
        if !entries.iter().any(|e| e.kind.get() == kind) {
            return Err(ArenaError::at(
                ErrorKind::MissingSection { section: kind },
                st_off,
            ));
        }
    }

    // ARENA-SEC-004 and ARENA-SEC-005
    let zero_gap = |from: u64, to: u64| -> Result<(), ArenaError> {
        let gap = region(from, to - from, "section padding")?;
        if gap.iter().any(|&b| b != 0) {
            return Err(ArenaError::at(
                ErrorKind::ReservedNonZero {
                    field: "section padding",
                },
                from,
            ));
        }
        Ok(())
    };
    let mut cursor = st_off + st_len; // no overflow: checked by `region` above
    let mut sections = Sections::default();
    // `None` bytes: the BITMAPS section, when the caller did not provide it.
    let mut found: Vec<(u32, u64, u64, Option<&'a [u8]>)> = Vec::with_capacity(entries.len());
    for e in entries {
        let kind = e.kind.get();
        let off = e.offset.get();
        let len = e.len.get();
        let expected = layout::align8(cursor).ok_or(ErrorKind::BadLayout { field: "sections" })?;
        if off != expected {
            return Err(ArenaError::at(
                ErrorKind::BadLayout {
                    field: "sections must follow each other, 8-aligned, in table order",
                },
                off,
            ));
        }
        // `expected` may exceed the region when the cursor is at its end; `region` reports that.
        let bytes = if kind == layout::SECTION_BITMAPS {
            region_opt(off, len, "section")?
        } else {
            Some(region(off, len, "section")?)
        };
        zero_gap(cursor, off)?;
        cursor = off + len; // no overflow: checked by `region`
        found.push((kind, off, len, bytes));
    }
    let end = layout::align8(cursor).ok_or(ErrorKind::BadLayout { field: "sections" })?;
    if end != tables_end {
        return Err(ArenaError::at(
            ErrorKind::BadLayout {
                field: "sections must fill the tables region exactly",
            },
            cursor,
        ));
    }
    zero_gap(cursor, end)?;

    // ARENA-SEC-006. Not for BITMAPS: its size grows with the heap, and each of its bytes is
    // covered by exactly one span CRC (ARENA-TAB-010), checked before the span is used
    // (ARENA-SPAN-001). Its own CRC is checked by the full check (ARENA-SEC-008, `verify_all`).
    let mut bitmaps_section = BitmapsSection::default();
    for (e, &(kind, off, len, bytes)) in entries.iter().zip(found.iter()) {
        if kind == layout::SECTION_BITMAPS {
            bitmaps_section = BitmapsSection {
                bytes,
                offset: off,
                len,
                crc: e.crc.get(),
            };
            if let Some(o) = sections.offsets.get_mut(kind as usize) {
                *o = off;
            }
            continue;
        }
        // Every other section was given (`region` above).
        let bytes = bytes.unwrap_or(&[]);
        let verified = kind == layout::SECTION_STRINGS && tables.strings_verified;
        let actual = if verified {
            e.crc.get()
        } else {
            layout::crc32(bytes)
        };
        if actual != e.crc.get() {
            return Err(ArenaError::at(
                ErrorKind::TableChecksum {
                    section: kind,
                    expected: e.crc.get(),
                    actual,
                },
                off,
            ));
        }
        let slot = match kind {
            layout::SECTION_STRINGS => &mut sections.strings,
            layout::SECTION_EXTERNS => &mut sections.externs,
            layout::SECTION_SPANS => &mut sections.spans,
            layout::SECTION_DEPS => &mut sections.deps,
            layout::SECTION_ROOTS => &mut sections.roots,
            layout::SECTION_META => &mut sections.meta,
            layout::SECTION_PRODUCER => &mut sections.producer,
            layout::SECTION_ARCHIVE_META => &mut sections.archive_meta,
            _ => continue, // unknown kinds (later minors) are ignored after their CRC check
        };
        *slot = bytes;
        if let Some(o) = sections.offsets.get_mut(kind as usize) {
            *o = off;
        }
    }
    let off_of = |kind: u32| sections.offsets.get(kind as usize).copied().unwrap_or(0);

    // ARENA-SEC-007
    let externs: &[ExternEntry] = table_slice(
        sections.externs,
        layout::SECTION_EXTERNS,
        off_of(layout::SECTION_EXTERNS),
    )?;
    let spans: &[SpanEntry] = table_slice(
        sections.spans,
        layout::SECTION_SPANS,
        off_of(layout::SECTION_SPANS),
    )?;
    let deps: &[U32] = table_slice(
        sections.deps,
        layout::SECTION_DEPS,
        off_of(layout::SECTION_DEPS),
    )?;
    let roots: &[RootEntry] = table_slice(
        sections.roots,
        layout::SECTION_ROOTS,
        off_of(layout::SECTION_ROOTS),
    )?;
    for (kind, n) in [
        (layout::SECTION_EXTERNS, externs.len()),
        (layout::SECTION_SPANS, spans.len()),
        (layout::SECTION_ROOTS, roots.len()),
    ] {
        if u32::try_from(n).is_err() {
            return Err(ArenaError::at(
                ErrorKind::BadTableLen {
                    section: kind,
                    len: n as u64,
                },
                off_of(kind),
            ));
        }
    }

    // ARENA-TAB-001
    let externs_off = off_of(layout::SECTION_EXTERNS);
    for (i, e) in externs.iter().enumerate() {
        if pool_get(sections.strings, e.name_off.get(), e.name_len.get()).is_none() {
            return Err(ArenaError::at(
                ErrorKind::OutOfBounds {
                    what: "extern name",
                    offset: u64::from(e.name_off.get()),
                    len: u64::from(e.name_len.get()),
                    limit: sections.strings.len() as u64,
                },
                externs_off + 8 * i as u64,
            ));
        }
    }

    // ARENA-TAB-002 .. ARENA-TAB-006
    let spans_off = off_of(layout::SECTION_SPANS);
    let heap_start = header.heap_start.get();
    let heap_end = heap_start + header.heap_len.get(); // checked by validate_header
    let mut expect_start = heap_start;
    let mut expect_bitmap = 0u64;
    for (i, s) in spans.iter().enumerate() {
        let id = i as u32; // fits: checked above
        let at = spans_off + 56 * i as u64;
        // ARENA-TAB-002
        if s.reserved.get() != 0 {
            return Err(ArenaError::at(
                ErrorKind::ReservedNonZero {
                    field: "span.reserved",
                },
                at + 52,
            ));
        }
        let start = s.start.get();
        let len = s.len.get();
        for (what, v) in [("span start", start), ("span len", len)] {
            if v % 8 != 0 {
                return Err(ArenaError::at(
                    ErrorKind::Misaligned {
                        what,
                        value: v,
                        align: 8,
                    },
                    at,
                ));
            }
        }
        if start < expect_start {
            return Err(ArenaError::at(
                ErrorKind::Overlap {
                    what: "spans overlap or are not sorted by start",
                },
                at,
            ));
        }
        if start != expect_start {
            return Err(ArenaError::at(
                ErrorKind::BadLayout {
                    field: "spans must tile the heap without gaps",
                },
                at,
            ));
        }
        expect_start = check_range("span", start, len, heap_end)?;
        // ARENA-TAB-003
        let d_off = u64::from(s.deps_off.get());
        let d_cnt = u64::from(s.deps_count.get());
        let d_end = check_range("span dependencies", d_off, d_cnt, deps.len() as u64)?;
        let list = to_usize(d_off)
            .zip(to_usize(d_end))
            .and_then(|(a, b)| deps.get(a..b))
            .unwrap_or(&[]);
        // ARENA-TAB-004
        let mut prev: Option<u32> = None;
        for d in list {
            let d = d.get();
            if d >= id || prev.is_some_and(|p| d <= p) {
                return Err(ArenaError::at(
                    ErrorKind::BadDependency { span: id, dep: d },
                    at + 32,
                ));
            }
            prev = Some(d);
        }
        // ARENA-TAB-005
        let bl = s.bitmap_len.get();
        if bl != layout::bitmap_len(len) {
            return Err(ArenaError::at(ErrorKind::BadBitmap { span: id }, at + 24));
        }
        let boff = s.bitmap_off.get();
        if boff % 8 != 0 {
            return Err(ArenaError::at(
                ErrorKind::Misaligned {
                    what: "bitmap_off",
                    value: boff,
                    align: 8,
                },
                at + 16,
            ));
        }
        let both = bl.checked_mul(2).ok_or(ErrorKind::BadBitmap { span: id })?;
        let bitmaps_end = check_range("span bitmaps", boff, both, bitmaps_section.len)?;
        // ARENA-TAB-010
        if boff < expect_bitmap {
            return Err(ArenaError::at(
                ErrorKind::Overlap {
                    what: "span bitmaps overlap or are not in span order",
                },
                at + 16,
            ));
        }
        if boff != expect_bitmap {
            return Err(ArenaError::at(
                ErrorKind::BadLayout {
                    field: "span bitmaps must tile BITMAPS without gaps",
                },
                at + 16,
            ));
        }
        expect_bitmap = bitmaps_end;
        // ARENA-TAB-006
        if pool_get(sections.meta, s.meta_off.get(), s.meta_len.get()).is_none() {
            return Err(ArenaError::at(
                ErrorKind::OutOfBounds {
                    what: "span meta",
                    offset: u64::from(s.meta_off.get()),
                    len: u64::from(s.meta_len.get()),
                    limit: sections.meta.len() as u64,
                },
                at + 40,
            ));
        }
    }
    if expect_start != heap_end {
        return Err(ArenaError::at(
            ErrorKind::BadLayout {
                field: "spans must tile the heap without gaps",
            },
            spans_off,
        ));
    }
    // ARENA-TAB-010, after the last span: every byte of BITMAPS belongs to a span.
    if expect_bitmap != bitmaps_section.len {
        return Err(ArenaError::at(
            ErrorKind::BadLayout {
                field: "span bitmaps must fill BITMAPS exactly",
            },
            bitmaps_section.offset.saturating_add(expect_bitmap),
        ));
    }

    // ARENA-TAB-007 and ARENA-TAB-008
    let roots_off = off_of(layout::SECTION_ROOTS);
    let mut prev_name: Option<&[u8]> = None;
    for (i, r) in roots.iter().enumerate() {
        let at = roots_off + 32 * i as u64;
        if r.reserved.get() != 0 {
            return Err(ArenaError::at(
                ErrorKind::ReservedNonZero {
                    field: "root.reserved",
                },
                at + 28,
            ));
        }
        let name =
            pool_get(sections.strings, r.name_off.get(), r.name_len.get()).ok_or_else(|| {
                ArenaError::at(
                    ErrorKind::OutOfBounds {
                        what: "root name",
                        offset: u64::from(r.name_off.get()),
                        len: u64::from(r.name_len.get()),
                        limit: sections.strings.len() as u64,
                    },
                    at,
                )
            })?;
        if pool_get(sections.meta, r.meta_off.get(), r.meta_len.get()).is_none() {
            return Err(ArenaError::at(
                ErrorKind::OutOfBounds {
                    what: "root meta",
                    offset: u64::from(r.meta_off.get()),
                    len: u64::from(r.meta_len.get()),
                    limit: sections.meta.len() as u64,
                },
                at + 20,
            ));
        }
        let span = to_usize(u64::from(r.span.get()))
            .and_then(|s| spans.get(s))
            .ok_or_else(|| {
                ArenaError::at(
                    ErrorKind::OutOfBounds {
                        what: "root span id",
                        offset: u64::from(r.span.get()),
                        len: 1,
                        limit: spans.len() as u64,
                    },
                    at + 16,
                )
            })?;
        let object = r.object.get();
        let (s_start, s_len) = (span.start.get(), span.len.get());
        // s_start + s_len was checked above.
        if object < s_start || object >= s_start + s_len {
            return Err(ArenaError::at(
                ErrorKind::OutOfBounds {
                    what: "root object outside its span",
                    offset: object,
                    len: 1,
                    limit: s_start + s_len,
                },
                at + 8,
            ));
        }
        // ARENA-TAB-008
        if let Some(p) = prev_name {
            match p.cmp(name) {
                core::cmp::Ordering::Less => {}
                core::cmp::Ordering::Equal => {
                    return Err(ArenaError::at(ErrorKind::DuplicateRoot, at))
                }
                core::cmp::Ordering::Greater => {
                    return Err(ArenaError::at(
                        ErrorKind::BadLayout {
                            field: "roots must be sorted by name",
                        },
                        at,
                    ))
                }
            }
        }
        prev_name = Some(name);
    }

    // ARENA-TAB-009
    let producer_off = off_of(layout::SECTION_PRODUCER);
    if sections.producer.len() > MAX_PRODUCER_LEN {
        return Err(ArenaError::at(
            ErrorKind::ProducerTooLong {
                len: sections.producer.len() as u64,
            },
            producer_off,
        ));
    }
    let producer = core::str::from_utf8(sections.producer)
        .map_err(|_| ArenaError::at(ErrorKind::BadUtf8, producer_off))?;

    // INVARIANTS established above (relied on by `Archive` accessors and the loader):
    // - header passed ARENA-HDR-*/LAY-*; the heap is [128, 128 + heap_len), heap_len % 8 == 0;
    // - every extern name, span dep list, span bitmap pair, span meta, root name/meta lies inside
    //   its section; spans tile the heap in id order, 8-aligned; span bitmap pairs tile BITMAPS
    //   in id order (pairwise disjoint); deps are strictly increasing and lower than their span;
    //   roots are sorted strictly by name and inside their spans;
    // - every section CRC but BITMAPS' was checked; `bitmaps` is `None` when the caller did not
    //   provide the BITMAPS bytes;
    // - counts of externs, spans and roots fit in u32.
    Ok(Archive {
        header,
        heap,
        strings: sections.strings,
        externs,
        spans,
        deps,
        roots,
        bitmaps: bitmaps_section.bytes,
        bitmaps_offset: bitmaps_section.offset,
        bitmaps_len: bitmaps_section.len,
        bitmaps_crc: bitmaps_section.crc,
        meta: sections.meta,
        producer,
        archive_meta: sections.archive_meta,
        extern_names_absent: false,
        // Fits: checked with the other counts above.
        extern_count: u32::try_from(externs.len()).unwrap_or(u32::MAX),
    })
}
