//! The read side: [`Archive`], a validated view of an archive's header and tables, and
//! [`SpanView`], a verified view of one span's (unrelocated) contents.
#![deny(clippy::indexing_slicing)]

use core::ops::Range;

use zerocopy::byteorder::little_endian::U32;
use zerocopy::FromBytes;

use crate::error::{ArenaError, ErrorKind};
use crate::layout::{ExternEntry, Header, RootEntry, SpanEntry, HEADER_LEN};
use crate::validate::{self, pool_get};
use crate::write::{ExternId, SpanId};

/// A validated view of an archive's header and all tables (not the span contents).
///
/// Obtained from [`Archive::from_bytes`] (whole file in memory) or [`crate::LoadedArena::archive`].
/// Construction costs O(size of the tables other than the slot bitmaps), independent of the heap
/// size: neither span contents nor the BITMAPS section (2 bits per heap word) are read. Span
/// contents, with their bitmaps, are checked separately by [`Archive::verify_span`] (through the
/// span CRC, which covers the span's bitmaps); [`Archive::verify_all`] is the full check.
#[derive(Clone, Copy, Debug)]
pub struct Archive<'a> {
    // INVARIANTS (established by `validate::validate_tables`, which is the only constructor):
    // - `header` passed ARENA-HDR-001..LAY-004;
    // - every extern name, root name (in `strings`), span/root meta (in `meta`), span dependency
    //   list (in `deps`) and span bitmap pair (in BITMAPS, `bitmaps_len` bytes) is in bounds;
    // - `bitmaps`, when present, is the whole BITMAPS section (`bitmaps_len` bytes at file offset
    //   `bitmaps_offset`); its CRC (`bitmaps_crc`) was NOT checked (ARENA-SEC-008 is part of
    //   `verify_all` only). `None` in the archive of a `LoadedArena`, which reads span bitmaps
    //   from its own memory;
    // - spans tile the heap in id order and their bitmap pairs tile BITMAPS in id order; deps are
    //   strictly increasing and lower than their span;
    // - roots are sorted strictly by name, each object inside its span;
    // - `heap`, when present, is exactly the heap region [heap_start, heap_start + heap_len).
    // Accessors still use `.get()` and never panic; the invariants make their `None` arms dead.
    pub(crate) header: Header,
    pub(crate) heap: Option<&'a [u8]>,
    pub(crate) strings: &'a [u8],
    pub(crate) externs: &'a [ExternEntry],
    pub(crate) spans: &'a [SpanEntry],
    pub(crate) deps: &'a [U32],
    pub(crate) roots: &'a [RootEntry],
    pub(crate) bitmaps: Option<&'a [u8]>,
    pub(crate) bitmaps_offset: u64,
    pub(crate) bitmaps_len: u64,
    pub(crate) bitmaps_crc: u32,
    pub(crate) meta: &'a [u8],
    pub(crate) producer: &'a str,
    pub(crate) archive_meta: &'a [u8],
    /// The extern names are not in `strings` (the Read strategy of [`crate::LoadedArena`]
    /// leaves them in the file: [`crate::LoadedArena::for_each_extern_name`]).
    pub(crate) extern_names_absent: bool,
    /// Number of externs (`externs.len()`, except in the archive view of a
    /// [`crate::LoadedArena`] that gave its extern table back: `externs` is empty there).
    pub(crate) extern_count: u32,
}

/// A named root: an object in a span, with client metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Root<'a> {
    /// The root's name.
    pub name: &'a [u8],
    /// Base-relative offset of the object.
    pub object: u64,
    /// The span holding the object.
    pub span: SpanId,
    /// Client metadata bytes.
    pub meta: &'a [u8],
}

/// A span's dependency list (span ids, strictly increasing, all lower than the span's own id).
#[derive(Clone, Copy, Debug)]
pub struct Deps<'a> {
    ids: &'a [U32],
}

impl<'a> Deps<'a> {
    /// Number of dependencies.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True if the span has no dependencies.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The `i`-th dependency.
    pub fn get(&self, i: usize) -> Option<SpanId> {
        self.ids.get(i).map(|d| SpanId(d.get()))
    }

    /// The dependencies in increasing id order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = SpanId> + 'a {
        self.ids.iter().map(|d| SpanId(d.get()))
    }

    /// The dependencies as a vector.
    pub fn to_vec(&self) -> Vec<SpanId> {
        self.iter().collect()
    }
}

impl<'a> IntoIterator for Deps<'a> {
    type Item = SpanId;
    type IntoIter = core::iter::Map<core::slice::Iter<'a, U32>, fn(&U32) -> SpanId>;
    fn into_iter(self) -> Self::IntoIter {
        fn conv(d: &U32) -> SpanId {
            SpanId(d.get())
        }
        self.ids.iter().map(conv as fn(&U32) -> SpanId)
    }
}

/// Table information about one span.
#[derive(Clone, Copy, Debug)]
pub struct SpanInfo<'a> {
    /// The span's id.
    pub id: SpanId,
    /// Base-relative start of its heap bytes.
    pub start: u64,
    /// Length of its heap bytes.
    pub len: u64,
    /// Its dependencies.
    pub deps: Deps<'a>,
    /// Client metadata bytes.
    pub meta: &'a [u8],
    /// The stored span CRC.
    pub crc: u32,
}

/// What an 8-byte word of a span holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// Plain data (or not a slot position).
    None,
    /// An internal pointer to this base-relative target.
    Internal(u64),
    /// A reference to this extern.
    External(ExternId),
}

/// A verified, read-only view of one span's unrelocated heap bytes and slots.
#[derive(Clone, Copy, Debug)]
pub struct SpanView<'a> {
    // INVARIANTS (established by `Archive::check_span`): `bytes.len() == len`, `len % 8 == 0`;
    // both bitmaps are `bitmap_len(len)` bytes with zero padding bits and disjoint; internal
    // targets and external ids were checked.
    id: SpanId,
    start: u64,
    bytes: &'a [u8],
    internal: &'a [u8],
    external: &'a [u8],
    meta: &'a [u8],
}

fn le_word(bytes: &[u8], at: usize) -> Option<u64> {
    let b = bytes.get(at..at.checked_add(8)?)?;
    let mut w = [0u8; 8];
    w.copy_from_slice(b);
    Some(u64::from_le_bytes(w))
}

/// Calls `f` with the index of every set bit of a bitmap of little-endian `u64` words (the
/// slot word indices of a span), in increasing order, stopping at the first error. (A plain
/// loop: the hot path of verification and relocation, about a million slots for a large
/// program; [`BitIter`] is the same walk as an iterator, for the `SpanView` slot iterators.)
#[inline]
pub(crate) fn try_for_each_slot<E>(
    bitmap: &[[u8; 8]],
    mut f: impl FnMut(usize) -> Result<(), E>,
) -> Result<(), E> {
    for (c, m) in bitmap.iter().enumerate() {
        let mut bits = u64::from_le_bytes(*m);
        while bits != 0 {
            f(64 * c + bits.trailing_zeros() as usize)?;
            bits &= bits - 1;
        }
    }
    Ok(())
}

/// [`try_for_each_slot`] for an `f` that cannot fail.
#[inline]
pub(crate) fn for_each_slot(bitmap: &[[u8; 8]], mut f: impl FnMut(usize)) {
    let never = try_for_each_slot(bitmap, |i| -> Result<(), core::convert::Infallible> {
        f(i);
        Ok(())
    });
    match never {
        Ok(()) => {}
        Err(e) => match e {},
    }
}

/// Iterates over the indices of set bits of a bitmap made of little-endian `u64` words.
#[derive(Clone, Debug)]
pub(crate) struct BitIter<'a> {
    words: core::slice::ChunksExact<'a, u8>,
    base: u64,
    cur: u64,
}

impl<'a> BitIter<'a> {
    pub(crate) fn new(bitmap: &'a [u8]) -> Self {
        BitIter {
            words: bitmap.chunks_exact(8),
            base: 0,
            cur: 0,
        }
    }
}

impl Iterator for BitIter<'_> {
    type Item = u64;
    fn next(&mut self) -> Option<u64> {
        while self.cur == 0 {
            let chunk = self.words.next()?;
            let mut w = [0u8; 8];
            w.copy_from_slice(chunk);
            self.cur = u64::from_le_bytes(w);
            self.base = self.base.wrapping_add(64);
        }
        let bit = u64::from(self.cur.trailing_zeros());
        self.cur &= self.cur - 1;
        Some(self.base - 64 + bit)
    }
}

impl<'a> SpanView<'a> {
    /// The span's id.
    pub fn id(&self) -> SpanId {
        self.id
    }

    /// Base-relative start of the span.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Length of the span's heap bytes.
    pub fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// True if the span has no heap bytes.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The span's heap bytes (as in the file: slots hold offsets and extern ids).
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Client metadata bytes.
    pub fn meta(&self) -> &'a [u8] {
        self.meta
    }

    fn rel(&self, offset: u64, len: u64) -> Option<usize> {
        let rel = offset.checked_sub(self.start)?;
        let end = rel.checked_add(len)?;
        if end > self.len() {
            return None;
        }
        usize::try_from(rel).ok()
    }

    /// The little-endian `u64` at base-relative `offset`, if `[offset, offset + 8)` is inside the
    /// span.
    pub fn read_u64(&self, offset: u64) -> Option<u64> {
        le_word(self.bytes, self.rel(offset, 8)?)
    }

    /// What the word at base-relative `offset` holds ([`Slot::None`] if `offset` is not an
    /// 8-aligned word of this span).
    pub fn slot(&self, offset: u64) -> Slot {
        if offset % 8 != 0 {
            return Slot::None;
        }
        let Some(rel) = self.rel(offset, 8) else {
            return Slot::None;
        };
        let word = rel / 8;
        let bit =
            |bm: &[u8]| -> bool { bm.get(word / 8).is_some_and(|b| (b >> (word % 8)) & 1 == 1) };
        let value = le_word(self.bytes, rel).unwrap_or(0);
        if bit(self.internal) {
            Slot::Internal(value)
        } else if bit(self.external) {
            // Fits in u32: checked by ARENA-SPAN-005.
            Slot::External(ExternId(u32::try_from(value).unwrap_or(u32::MAX)))
        } else {
            Slot::None
        }
    }

    /// All internal slots as `(slot offset, target offset)`, in increasing slot order.
    pub fn internal_slots(&self) -> impl Iterator<Item = (u64, u64)> + 'a {
        let (bytes, start) = (self.bytes, self.start);
        BitIter::new(self.internal).map(move |i| {
            let rel = usize::try_from(i * 8).unwrap_or(usize::MAX);
            (start + i * 8, le_word(bytes, rel).unwrap_or(0))
        })
    }

    /// The internal-slot bitmap: bit `i % 8` of byte `i / 8` is set when word `i` of the span
    /// (base-relative offset `start() + 8 * i`) is an internal slot. Padding bits are zero and
    /// no bit is set in both bitmaps (verified).
    pub fn internal_bitmap(&self) -> &'a [u8] {
        self.internal
    }

    /// The external-slot bitmap, laid out as [`SpanView::internal_bitmap`].
    pub fn external_bitmap(&self) -> &'a [u8] {
        self.external
    }

    /// All external slots as `(slot offset, extern id)`, in increasing slot order.
    pub fn external_slots(&self) -> impl Iterator<Item = (u64, ExternId)> + 'a {
        let (bytes, start) = (self.bytes, self.start);
        BitIter::new(self.external).map(move |i| {
            let rel = usize::try_from(i * 8).unwrap_or(usize::MAX);
            let id = le_word(bytes, rel).unwrap_or(0);
            (
                start + i * 8,
                ExternId(u32::try_from(id).unwrap_or(u32::MAX)),
            )
        })
    }
}

impl<'a> Archive<'a> {
    /// Validates the header and all tables of a complete archive held in memory (steps
    /// `ARENA-HDR-001` to `ARENA-TAB-009` of the spec, in order). Does not read span contents,
    /// nor the BITMAPS section (its CRC is not checked here, see [`verify_all`](Self::verify_all)).
    pub fn from_bytes(bytes: &'a [u8]) -> Result<Archive<'a>, ArenaError> {
        let header = validate::validate_header(bytes, bytes.len() as u64)?;
        let heap_start = header.heap_start.get();
        let tables_start = header.tables_start.get();
        let (hs, ts) = match (usize::try_from(heap_start), usize::try_from(tables_start)) {
            (Ok(h), Ok(t)) => (h, t),
            _ => return Err(ErrorKind::BadLayout { field: "offsets" }.into()),
        };
        let heap = bytes
            .get(hs..ts)
            .ok_or(ErrorKind::BadLayout { field: "heap" })?;
        let tables = bytes
            .get(ts..)
            .ok_or(ErrorKind::BadLayout { field: "tables" })?;
        validate::validate_tables(header, validate::TablesBytes::whole(tables), Some(heap))
    }

    /// The header (already validated).
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The opaque client profile.
    pub fn profile(&self) -> &[u8; 32] {
        &self.header.profile
    }

    /// `Ok` if the profile equals `expected`, else [`ErrorKind::ProfileMismatch`] (incompatible).
    pub fn check_profile(&self, expected: &[u8; 32]) -> Result<(), ArenaError> {
        if &self.header.profile == expected {
            Ok(())
        } else {
            Err(ArenaError::at(ErrorKind::ProfileMismatch, 32))
        }
    }

    /// `(major, minor)` format version of the file.
    pub fn format_version(&self) -> (u16, u16) {
        (
            self.header.format_major.get(),
            self.header.format_minor.get(),
        )
    }

    /// Compatible-feature flags (unknown bits are ignored by this reader).
    pub fn compat_flags(&self) -> u32 {
        self.header.compat_flags.get()
    }

    /// The advisory preferred base address recorded by the writer (0 = none).
    pub fn preferred_base(&self) -> u64 {
        self.header.preferred_base.get()
    }

    /// The producer string.
    pub fn producer(&self) -> &'a str {
        self.producer
    }

    /// Archive-level client metadata.
    pub fn archive_meta(&self) -> &'a [u8] {
        self.archive_meta
    }

    /// Total file length.
    pub fn file_len(&self) -> u64 {
        self.header.file_len.get()
    }

    /// Base-relative range of the heap.
    pub fn heap_range(&self) -> Range<u64> {
        let start = self.header.heap_start.get();
        start..start + self.header.heap_len.get()
    }

    /// Number of externs.
    pub fn extern_count(&self) -> u32 {
        self.extern_count
    }

    /// The name of extern `id` (`None` also in the archive view of a [`crate::LoadedArena`]
    /// opened with [`crate::LoadStrategy::Read`], which leaves the extern names in the file:
    /// use [`crate::LoadedArena::for_each_extern_name`] there).
    pub fn extern_name(&self, id: ExternId) -> Option<&'a [u8]> {
        if self.extern_names_absent {
            return None;
        }
        let e = self.externs.get(usize::try_from(id.0).ok()?)?;
        pool_get(self.strings, e.name_off.get(), e.name_len.get())
    }

    /// Number of spans.
    pub fn span_count(&self) -> u32 {
        u32::try_from(self.spans.len()).unwrap_or(u32::MAX)
    }

    pub(crate) fn span_entry(&self, id: SpanId) -> Option<&'a SpanEntry> {
        self.spans.get(usize::try_from(id.0).ok()?)
    }

    pub(crate) fn span_deps(&self, e: &SpanEntry) -> Deps<'a> {
        let start = usize::try_from(e.deps_off.get()).unwrap_or(usize::MAX);
        let end = start.saturating_add(usize::try_from(e.deps_count.get()).unwrap_or(0));
        Deps {
            ids: self.deps.get(start..end).unwrap_or(&[]),
        }
    }

    /// Table information about span `id`.
    pub fn span(&self, id: SpanId) -> Option<SpanInfo<'a>> {
        let e = self.span_entry(id)?;
        Some(SpanInfo {
            id,
            start: e.start.get(),
            len: e.len.get(),
            deps: self.span_deps(e),
            meta: pool_get(self.meta, e.meta_off.get(), e.meta_len.get())?,
            crc: e.crc.get(),
        })
    }

    /// Number of roots.
    pub fn root_count(&self) -> u32 {
        u32::try_from(self.roots.len()).unwrap_or(u32::MAX)
    }

    fn root_at(&self, r: &RootEntry) -> Option<Root<'a>> {
        Some(Root {
            name: pool_get(self.strings, r.name_off.get(), r.name_len.get())?,
            object: r.object.get(),
            span: SpanId(r.span.get()),
            meta: pool_get(self.meta, r.meta_off.get(), r.meta_len.get())?,
        })
    }

    /// The `index`-th root in name order.
    pub fn root(&self, index: u32) -> Option<Root<'a>> {
        self.root_at(self.roots.get(usize::try_from(index).ok()?)?)
    }

    /// The root called `name` (binary search; no allocation).
    pub fn find_root(&self, name: &[u8]) -> Option<Root<'a>> {
        let strings = self.strings;
        let i = self
            .roots
            .binary_search_by(|r| {
                pool_get(strings, r.name_off.get(), r.name_len.get())
                    .unwrap_or(&[])
                    .cmp(name)
            })
            .ok()?;
        self.root_at(self.roots.get(i)?)
    }

    /// Base-relative `(start, len)` of the bitmap pair of span entry `e` (internal bitmap, then
    /// external bitmap: `2 * bitmap_len` bytes), inside the BITMAPS section (ARENA-TAB-005).
    pub(crate) fn span_bitmaps_range(&self, e: &SpanEntry) -> Option<(u64, u64)> {
        let start = self.bitmaps_offset.checked_add(e.bitmap_off.get())?;
        let len = e.bitmap_len.get().checked_mul(2)?;
        Some((start, len))
    }

    /// Base-relative `[start, end)` of span `d` (for dependency lookups).
    fn span_range(&self, d: u32) -> Option<(u64, u64)> {
        let e = self.spans.get(usize::try_from(d).ok()?)?;
        Some((e.start.get(), e.start.get() + e.len.get()))
    }

    /// Checks span `id` whose heap bytes are `bytes` and whose bitmap pair is `bitmaps` (internal
    /// then external, `2 * bitmap_len` bytes) (steps `ARENA-SPAN-001` .. `005`) and returns its
    /// view. Both must be as in the file.
    pub(crate) fn check_span<'v>(
        self,
        id: SpanId,
        bytes: &'v [u8],
        bitmaps: &'v [u8],
    ) -> Result<SpanView<'v>, ArenaError>
    where
        'a: 'v,
    {
        let e = self
            .span_entry(id)
            .ok_or(ErrorKind::NoSuchSpan { span: id.0 })?;
        let start = e.start.get();
        let len = e.len.get();
        if bytes.len() as u64 != len {
            return Err(ArenaError::at(
                ErrorKind::TooShort {
                    needed: len,
                    got: bytes.len() as u64,
                },
                start,
            ));
        }
        let (internal, external) = usize::try_from(e.bitmap_len.get())
            .ok()
            .filter(|&bl| bl.checked_mul(2) == Some(bitmaps.len()))
            .and_then(|bl| bitmaps.split_at_checked(bl))
            .ok_or(ArenaError::at(ErrorKind::BadBitmap { span: id.0 }, start))?;
        let meta = pool_get(self.meta, e.meta_off.get(), e.meta_len.get())
            .ok_or(ErrorKind::BadLayout { field: "span meta" })?;

        // ARENA-SPAN-001
        let mut h = crc32fast::Hasher::new();
        h.update(bytes);
        h.update(internal);
        h.update(external);
        h.update(meta);
        let actual = h.finalize();
        if actual != e.crc.get() {
            return Err(ArenaError::at(
                ErrorKind::SpanChecksum {
                    span: id.0,
                    expected: e.crc.get(),
                    actual,
                },
                start,
            ));
        }
        // ARENA-SPAN-002 and ARENA-SPAN-003
        let nwords = len / 8;
        let used_in_last = nwords % 64;
        let last_mask: u64 = if used_in_last == 0 {
            0
        } else {
            !0u64 << used_in_last
        };
        let n_chunks = internal.len() / 8;
        for (i, (a, b)) in internal
            .chunks_exact(8)
            .zip(external.chunks_exact(8))
            .enumerate()
        {
            let a = le_word(a, 0).unwrap_or(0);
            let b = le_word(b, 0).unwrap_or(0);
            if i + 1 == n_chunks && (a | b) & last_mask != 0 {
                return Err(ArenaError::at(ErrorKind::BadBitmap { span: id.0 }, start));
            }
            let both = a & b;
            if both != 0 {
                let slot = start + 8 * (64 * i as u64 + u64::from(both.trailing_zeros()));
                let value = le_word(bytes, usize::try_from(slot - start).unwrap_or(usize::MAX))
                    .unwrap_or(0);
                return Err(ArenaError::at(
                    ErrorKind::BadSlot {
                        span: id.0,
                        slot,
                        value,
                    },
                    slot,
                ));
            }
        }
        // ARENA-SPAN-004. Word views: alignment 1, and every length is a multiple of 8 here
        // (span lengths by ARENA-TAB-002, bitmap lengths by ARENA-TAB-010).
        let bad_len = || ArenaError::at(ErrorKind::BadBitmap { span: id.0 }, start);
        let words = <[[u8; 8]]>::ref_from_bytes(bytes).map_err(|_| bad_len())?;
        let internal_w = <[[u8; 8]]>::ref_from_bytes(internal).map_err(|_| bad_len())?;
        let external_w = <[[u8; 8]]>::ref_from_bytes(external).map_err(|_| bad_len())?;
        let word = |i: usize| words.get(i).map_or(0, |w| u64::from_le_bytes(*w));
        let end_off = start + len;
        let deps = self.span_deps(e);
        try_for_each_slot(internal_w, |i| {
            let slot = start + 8 * i as u64;
            let target = word(i);
            let ok = if target >= start {
                target < end_off
            } else {
                // Dependencies are sorted by id, and spans tile the heap in id order, so their
                // ranges are sorted too: find the last dependency starting at or before target.
                let p = deps
                    .ids
                    .partition_point(|d| self.span_range(d.get()).is_some_and(|r| r.0 <= target));
                p > 0
                    && deps
                        .ids
                        .get(p - 1)
                        .and_then(|d| self.span_range(d.get()))
                        .is_some_and(|(s, e)| s <= target && target < e)
            };
            if !ok {
                return Err(ArenaError::at(
                    ErrorKind::BadSlot {
                        span: id.0,
                        slot,
                        value: target,
                    },
                    slot,
                ));
            }
            Ok(())
        })?;
        // ARENA-SPAN-005
        let count = u64::from(self.extern_count);
        try_for_each_slot(external_w, |i| {
            let v = word(i);
            if v >= count {
                let slot = start + 8 * i as u64;
                return Err(ArenaError::at(
                    ErrorKind::BadExternId {
                        span: id.0,
                        slot,
                        id: v,
                    },
                    slot,
                ));
            }
            Ok(())
        })?;
        Ok(SpanView {
            id,
            start,
            bytes,
            internal,
            external,
            meta,
        })
    }

    /// Fully checks span `id` (CRC, bitmap padding, slot targets and extern ids; steps
    /// `ARENA-SPAN-001` .. `005`) and returns a view of its unrelocated bytes.
    ///
    /// Needs the span contents: works on archives from [`Archive::from_bytes`]; the archive of a
    /// [`crate::LoadedArena`] returns [`ErrorKind::HeapUnavailable`] (it verifies spans in
    /// `load_span`).
    pub fn verify_span(&self, id: SpanId) -> Result<SpanView<'a>, ArenaError> {
        let heap = self
            .heap
            .ok_or(ArenaError::kind_only(ErrorKind::HeapUnavailable))?;
        let e = self
            .span_entry(id)
            .ok_or(ErrorKind::NoSuchSpan { span: id.0 })?;
        let heap_start = self.header.heap_start.get();
        let rel = e.start.get().checked_sub(heap_start);
        let bytes = rel
            .and_then(|r| {
                let s = usize::try_from(r).ok()?;
                let l = usize::try_from(e.len.get()).ok()?;
                heap.get(s..s.checked_add(l)?)
            })
            .ok_or(ErrorKind::BadLayout { field: "span" })?;
        let bitmaps = self
            .bitmaps
            .ok_or(ArenaError::kind_only(ErrorKind::HeapUnavailable))?;
        let pair = usize::try_from(e.bitmap_off.get())
            .ok()
            .zip(usize::try_from(e.bitmap_len.get()).ok())
            .and_then(|(off, bl)| bitmaps.get(off..off.checked_add(bl.checked_mul(2)?)?))
            .ok_or(ArenaError::at(
                ErrorKind::BadBitmap { span: id.0 },
                e.start.get(),
            ))?;
        self.check_span(id, bytes, pair)
    }

    /// The full check: [`verify_span`](Self::verify_span) for every span, in id order, then the
    /// CRC of the BITMAPS section (`ARENA-SEC-008`, the one section CRC that opening does not
    /// check: every BITMAPS byte is covered by exactly one span CRC, `ARENA-TAB-010`).
    pub fn verify_all(&self) -> Result<(), ArenaError> {
        for i in 0..self.span_count() {
            self.verify_span(SpanId(i))?;
        }
        // ARENA-SEC-008
        let bitmaps = self
            .bitmaps
            .ok_or(ArenaError::kind_only(ErrorKind::HeapUnavailable))?;
        let actual = crate::layout::crc32(bitmaps);
        if actual != self.bitmaps_crc {
            return Err(ArenaError::at(
                ErrorKind::TableChecksum {
                    section: crate::layout::SECTION_BITMAPS,
                    expected: self.bitmaps_crc,
                    actual,
                },
                self.bitmaps_offset,
            ));
        }
        Ok(())
    }

    /// The size of the header (always 128).
    pub fn header_len(&self) -> usize {
        HEADER_LEN
    }
}
