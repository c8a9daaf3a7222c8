#!/usr/bin/env python3
"""Independent reader for pycds arena files, format 1.x.

Written only from ``spec/format.md`` (no knowledge of the Rust reference
implementation), using nothing but the Python standard library. It parses an
archive, runs the ordered validation algorithm of ``format.md`` section 7 as a
*full check* (every check: the open-time steps 1-29, the per-span steps 30-34 for
every span, then step 35, the BITMAPS section CRC) and lists what the archive holds.

Usage::

    python3 arena_reader.py FILE            # validate, then list header, externs, spans, roots
    python3 arena_reader.py --roots FILE    # validate, then print root names only, one a line
    python3 arena_reader.py -q FILE         # validate only
    python3 arena_reader.py --no-spans FILE # open-time checks only (steps 1-29), as a loader

Exit status: 0 when the file passes every check; 1 when a check fails (the requirement id,
e.g. ``ARENA-SPAN-001``, and a message are printed on stderr); 2 on usage or I/O errors.
"""

from __future__ import annotations

import argparse
import bisect
import struct
import sys
import zlib
from dataclasses import dataclass, field

MAGIC = b"\x89ARENA\r\n"
HEADER_LEN = 128
SUPPORTED_MAJOR = 1
KNOWN_INCOMPAT_FLAGS = 0  # none defined in 1.0
U32_MAX = 0xFFFFFFFF
U64_MAX = 0xFFFFFFFFFFFFFFFF

SECTION_ENTRY_LEN = 24
STRINGS, EXTERNS, SPANS, DEPS, ROOTS, BITMAPS, META, PRODUCER, ARCHIVE_META = range(1, 10)
KIND_NAMES = {
    STRINGS: "STRINGS",
    EXTERNS: "EXTERNS",
    SPANS: "SPANS",
    DEPS: "DEPS",
    ROOTS: "ROOTS",
    BITMAPS: "BITMAPS",
    META: "META",
    PRODUCER: "PRODUCER",
    ARCHIVE_META: "ARCHIVE_META",
}
EXTERN_ENTRY_LEN = 8
SPAN_ENTRY_LEN = 56
DEP_ENTRY_LEN = 4
ROOT_ENTRY_LEN = 32

# Requirement ids whose failure means "incompatible" (regenerate) rather than "corrupt".
INCOMPATIBLE_IDS = {"ARENA-HDR-003", "ARENA-HDR-004"}


class ArenaError(Exception):
    """A validation failure: ``req`` is the requirement id of format.md section 7."""

    def __init__(self, req: str, message: str):
        super().__init__(f"{req}: {message}")
        self.req = req
        self.message = message

    @property
    def kind(self) -> str:
        return "incompatible" if self.req in INCOMPATIBLE_IDS else "corrupt"


def fail(req: str, message: str) -> None:
    raise ArenaError(req, message)


# --------------------------------------------------------------------------------------------
# Overflow-free arithmetic (format.md section 2): a result that does not fit in 64 bits is a
# validation failure, never a wrapped value. Python integers do not wrap, so we only need to
# check the result against 2**64.


def add64(req: str, a: int, b: int, what: str) -> int:
    s = a + b
    if s > U64_MAX:
        fail(req, f"{what} overflows 64 bits ({a:#x} + {b:#x})")
    return s


def mul64(req: str, a: int, b: int, what: str) -> int:
    p = a * b
    if p > U64_MAX:
        fail(req, f"{what} overflows 64 bits ({a:#x} * {b:#x})")
    return p


def align8(req: str, x: int, what: str) -> int:
    return add64(req, x, 7, what) & ~7


def inside(offset: int, length: int, lo: int, hi: int) -> bool:
    """``[offset, offset+length)`` inside ``[lo, hi)``; an overflowing end is outside."""
    end = offset + length
    return lo <= offset and end <= U64_MAX and end <= hi


def u16(buf, off: int) -> int:
    return struct.unpack_from("<H", buf, off)[0]


def u32(buf, off: int) -> int:
    return struct.unpack_from("<I", buf, off)[0]


def u64(buf, off: int) -> int:
    return struct.unpack_from("<Q", buf, off)[0]


def crc32(*chunks) -> int:
    c = 0
    for chunk in chunks:
        c = zlib.crc32(chunk, c)
    return c & 0xFFFFFFFF


def is_zero(buf, start: int, end: int) -> bool:
    return end <= start or bytes(buf[start:end]).count(0) == end - start


# --------------------------------------------------------------------------------------------
# Parsed structures


@dataclass
class Header:
    format_major: int
    format_minor: int
    header_len: int
    file_len: int
    incompat_flags: int
    compat_flags: int
    profile: bytes
    preferred_base: int
    heap_start: int
    heap_len: int
    tables_start: int
    tables_len: int
    section_table_offset: int
    section_count: int
    section_table_crc: int
    header_crc: int
    reserved: bytes


@dataclass
class Section:
    index: int
    kind: int
    crc: int
    offset: int
    length: int

    @property
    def name(self) -> str:
        return KIND_NAMES.get(self.kind, f"unknown({self.kind})")


@dataclass
class Extern:
    id: int
    name_off: int
    name_len: int
    name: bytes = b""


@dataclass
class Span:
    id: int
    start: int
    length: int
    bitmap_off: int
    bitmap_len: int
    deps_off: int
    deps_count: int
    meta_off: int
    meta_len: int
    crc: int
    reserved: int
    deps: list = field(default_factory=list)
    internal_slots: int = 0
    external_slots: int = 0
    verified: bool = False


@dataclass
class Root:
    index: int
    name_off: int
    name_len: int
    object: int
    span: int
    meta_off: int
    meta_len: int
    reserved: int
    name: bytes = b""


# --------------------------------------------------------------------------------------------
# The reader


class Arena:
    """An arena file that passed the open-time checks (steps 1-29; they never read the BITMAPS
    section's bytes, see step 18).

    Per-span checks (steps 30-34) are run by :meth:`verify_span` / :meth:`verify_all_spans`;
    :meth:`verify_all` is the full check (every span, then step 35, the BITMAPS section CRC).
    """

    def __init__(self, data: bytes):
        self.data = memoryview(data)
        self.header: Header
        self.sections: list[Section] = []
        self.by_kind: dict[int, Section] = {}
        self.externs: list[Extern] = []
        self.spans: list[Span] = []
        self.roots: list[Root] = []
        self.producer: str = ""
        self.archive_meta: bytes = b""
        self._parse()

    # -- steps 1-8: header ---------------------------------------------------------------------
    def _parse_header(self) -> None:
        d = self.data
        if len(d) < HEADER_LEN:
            fail("ARENA-HDR-001", f"file is {len(d)} bytes, shorter than the {HEADER_LEN}-byte header")
        if bytes(d[0:8]) != MAGIC:
            fail("ARENA-HDR-002", f"bad magic {bytes(d[0:8]).hex(' ')}")
        h = Header(
            format_major=u16(d, 8),
            format_minor=u16(d, 10),
            header_len=u32(d, 12),
            file_len=u64(d, 16),
            incompat_flags=u32(d, 24),
            compat_flags=u32(d, 28),
            profile=bytes(d[32:64]),
            preferred_base=u64(d, 64),
            heap_start=u64(d, 72),
            heap_len=u64(d, 80),
            tables_start=u64(d, 88),
            tables_len=u64(d, 96),
            section_table_offset=u64(d, 104),
            section_count=u32(d, 112),
            section_table_crc=u32(d, 116),
            header_crc=u32(d, 120),
            reserved=bytes(d[124:128]),
        )
        self.header = h
        if h.format_major != SUPPORTED_MAJOR:
            fail("ARENA-HDR-003", f"unsupported format major version {h.format_major} (incompatible)")
        # Any format_minor is accepted.
        if h.incompat_flags & ~KNOWN_INCOMPAT_FLAGS:
            fail("ARENA-HDR-004", f"unknown incompat_flags {h.incompat_flags:#x} (incompatible)")
        if h.header_len != HEADER_LEN:
            fail("ARENA-HDR-005", f"header_len is {h.header_len}, not {HEADER_LEN}")
        computed = crc32(d[0:120], b"\0\0\0\0", d[124:128])
        if computed != h.header_crc:
            fail("ARENA-HDR-006", f"header CRC {h.header_crc:#010x} != computed {computed:#010x}")
        if h.file_len != len(d):
            fail("ARENA-HDR-007", f"file_len {h.file_len} != actual length {len(d)}")
        if h.reserved != b"\0\0\0\0":
            fail("ARENA-HDR-008", "reserved header bytes 124..128 are not zero")
        # compat_flags: unknown bits are ignored.

    # -- steps 9-12: layout --------------------------------------------------------------------
    def _check_layout(self) -> None:
        h = self.header
        if h.heap_start != HEADER_LEN:
            fail("ARENA-LAY-001", f"heap_start is {h.heap_start:#x}, not {HEADER_LEN:#x}")
        if h.heap_len % 8 != 0:
            fail("ARENA-LAY-002", f"heap_len {h.heap_len:#x} is not a multiple of 8")
        heap_end = add64("ARENA-LAY-002", h.heap_start, h.heap_len, "heap_start + heap_len")
        if heap_end > h.file_len:
            fail("ARENA-LAY-002", f"heap ends at {heap_end:#x}, after the end of the file {h.file_len:#x}")
        if h.tables_start != heap_end:
            fail("ARENA-LAY-003", f"tables_start {h.tables_start:#x} != heap_start + heap_len {heap_end:#x}")
        tables_end = add64("ARENA-LAY-004", h.tables_start, h.tables_len, "tables_start + tables_len")
        if tables_end != h.file_len:
            fail("ARENA-LAY-004", f"tables end at {tables_end:#x}, not at file_len {h.file_len:#x}")

    # -- steps 13-19: section table and sections -----------------------------------------------
    def _parse_sections(self) -> None:
        d = self.data
        h = self.header
        tables_end = h.file_len  # == tables_start + tables_len (step 12)
        if h.section_table_offset != h.tables_start:
            fail(
                "ARENA-SEC-001",
                f"section_table_offset {h.section_table_offset:#x} != tables_start {h.tables_start:#x}",
            )
        st_len = mul64("ARENA-SEC-001", h.section_count, SECTION_ENTRY_LEN, "section table length")
        if not inside(h.section_table_offset, st_len, h.tables_start, tables_end):
            fail(
                "ARENA-SEC-001",
                f"section table ({h.section_count} entries) does not fit in the tables region",
            )
        st = h.section_table_offset
        computed = crc32(d[st : st + st_len])
        if computed != h.section_table_crc:
            fail(
                "ARENA-SEC-002",
                f"section table CRC {h.section_table_crc:#010x} != computed {computed:#010x}",
            )
        for i in range(h.section_count):
            e = st + i * SECTION_ENTRY_LEN
            self.sections.append(
                Section(index=i, kind=u32(d, e), crc=u32(d, e + 4), offset=u64(d, e + 8), length=u64(d, e + 16))
            )
        # Step 15 (ARENA-SEC-003): kinds non-zero, strictly increasing, 1-9 all present.
        prev = 0
        for s in self.sections:
            if s.kind == 0:
                fail("ARENA-SEC-003", f"section {s.index} has kind 0")
            if s.kind <= prev:
                fail("ARENA-SEC-003", f"section {s.index} kind {s.kind} not greater than previous kind {prev}")
            prev = s.kind
            self.by_kind[s.kind] = s
        missing = [k for k in KIND_NAMES if k not in self.by_kind]
        if missing:
            fail("ARENA-SEC-003", "missing section kind(s): " + ", ".join(f"{k} ({KIND_NAMES[k]})" for k in missing))
        # Steps 16-17 (ARENA-SEC-004 placement, ARENA-SEC-005 padding), one walk.
        cursor = st + st_len
        for s in self.sections:
            expected = align8("ARENA-SEC-004", cursor, "align8(cursor)")
            if s.offset != expected:
                fail(
                    "ARENA-SEC-004",
                    f"section {s.index} ({s.name}) at {s.offset:#x}, expected align8(cursor) = {expected:#x}",
                )
            if not inside(s.offset, s.length, h.tables_start, tables_end):
                fail(
                    "ARENA-SEC-004",
                    f"section {s.index} ({s.name}) [{s.offset:#x} +{s.length:#x}) is not inside the tables region",
                )
            if not is_zero(d, cursor, s.offset):
                fail("ARENA-SEC-005", f"non-zero padding before section {s.index} ({s.name}) at {cursor:#x}")
            cursor = s.offset + s.length
        end = align8("ARENA-SEC-004", cursor, "align8(cursor)")
        if end != h.file_len:
            fail("ARENA-SEC-004", f"sections end at align8({cursor:#x}) = {end:#x}, not at file_len {h.file_len:#x}")
        if not is_zero(d, cursor, h.file_len):
            fail("ARENA-SEC-005", f"non-zero padding after the last section at {cursor:#x}")
        # Step 18 (ARENA-SEC-006): every section's CRC, unknown kinds included, except BITMAPS
        # (its bytes are covered by the span CRCs, step 25; its own CRC is step 35).
        for s in self.sections:
            if s.kind == BITMAPS:
                continue
            computed = crc32(d[s.offset : s.offset + s.length])
            if computed != s.crc:
                fail("ARENA-SEC-006", f"section {s.index} ({s.name}) CRC {s.crc:#010x} != computed {computed:#010x}")
        # Step 19 (ARENA-SEC-007): entry-size multiples and u32 counts.
        for kind, size in ((EXTERNS, EXTERN_ENTRY_LEN), (SPANS, SPAN_ENTRY_LEN), (DEPS, DEP_ENTRY_LEN), (ROOTS, ROOT_ENTRY_LEN)):
            s = self.by_kind[kind]
            if s.length % size != 0:
                fail("ARENA-SEC-007", f"{s.name} length {s.length} is not a multiple of {size}")
            # format.md 6.1 requires every entry count to fit in a u32; step 19 names externs,
            # spans and roots (DEPS too large would need a >16 GiB file).
            if s.length // size > U32_MAX:
                fail("ARENA-SEC-007", f"{s.name} has {s.length // size} entries, more than fit in a u32")

    def _section_bytes(self, kind: int) -> memoryview:
        s = self.by_kind[kind]
        return self.data[s.offset : s.offset + s.length]

    # -- steps 20-29: table entries ------------------------------------------------------------
    def _parse_tables(self) -> None:
        d = self.data
        h = self.header
        strings = self._section_bytes(STRINGS)
        meta_len = self.by_kind[META].length
        bitmaps_len = self.by_kind[BITMAPS].length
        deps_sec = self.by_kind[DEPS]
        n_deps = deps_sec.length // DEP_ENTRY_LEN

        # Step 20 (ARENA-TAB-001)
        ex = self.by_kind[EXTERNS]
        for i in range(ex.length // EXTERN_ENTRY_LEN):
            e = ex.offset + i * EXTERN_ENTRY_LEN
            x = Extern(id=i, name_off=u32(d, e), name_len=u32(d, e + 4))
            if not inside(x.name_off, x.name_len, 0, len(strings)):
                fail("ARENA-TAB-001", f"extern {i} name [{x.name_off}, +{x.name_len}) outside STRINGS ({len(strings)} bytes)")
            x.name = bytes(strings[x.name_off : x.name_off + x.name_len])
            self.externs.append(x)

        # Steps 21-26 (ARENA-TAB-002..005, ARENA-TAB-010, ARENA-TAB-006), span by span.
        heap_end = h.heap_start + h.heap_len
        sp = self.by_kind[SPANS]
        prev_end = h.heap_start
        bitmaps_cursor = 0  # where the next span's bitmaps must start (step 25)
        for i in range(sp.length // SPAN_ENTRY_LEN):
            e = sp.offset + i * SPAN_ENTRY_LEN
            s = Span(
                id=i,
                start=u64(d, e),
                length=u64(d, e + 8),
                bitmap_off=u64(d, e + 16),
                bitmap_len=u64(d, e + 24),
                deps_off=u32(d, e + 32),
                deps_count=u32(d, e + 36),
                meta_off=u32(d, e + 40),
                meta_len=u32(d, e + 44),
                crc=u32(d, e + 48),
                reserved=u32(d, e + 52),
            )
            # 21: ARENA-TAB-002
            if s.reserved != 0:
                fail("ARENA-TAB-002", f"span {i}: reserved is {s.reserved:#x}, not zero")
            if s.start % 8 or s.length % 8:
                fail("ARENA-TAB-002", f"span {i}: start {s.start:#x} / len {s.length:#x} not multiples of 8")
            if s.start < prev_end:
                fail("ARENA-TAB-002", f"span {i}: starts at {s.start:#x}, overlapping the previous span (ends {prev_end:#x})")
            if s.start > prev_end:
                fail("ARENA-TAB-002", f"span {i}: starts at {s.start:#x}, leaving a gap after {prev_end:#x}")
            end = add64("ARENA-TAB-002", s.start, s.length, f"span {i} end")
            if end > heap_end:
                fail("ARENA-TAB-002", f"span {i}: ends at {end:#x}, after the heap end {heap_end:#x}")
            prev_end = end
            # 22: ARENA-TAB-003
            if not inside(s.deps_off, s.deps_count, 0, n_deps):
                fail("ARENA-TAB-003", f"span {i}: deps [{s.deps_off}, +{s.deps_count}) outside DEPS ({n_deps} entries)")
            s.deps = [u32(d, deps_sec.offset + 4 * (s.deps_off + k)) for k in range(s.deps_count)]
            # 23: ARENA-TAB-004
            prev_dep = -1
            for dep in s.deps:
                if dep <= prev_dep:
                    fail("ARENA-TAB-004", f"span {i}: dependency list {s.deps} is not strictly increasing")
                if dep >= i:
                    fail("ARENA-TAB-004", f"span {i}: dependency {dep} is not lower than the span's id")
                prev_dep = dep
            # 24: ARENA-TAB-005
            want = 8 * ((s.length + 511) // 512)
            if s.bitmap_len != want:
                fail("ARENA-TAB-005", f"span {i}: bitmap_len {s.bitmap_len} != 8*ceil(len/512) = {want}")
            if s.bitmap_off % 8:
                fail("ARENA-TAB-005", f"span {i}: bitmap_off {s.bitmap_off:#x} is not a multiple of 8")
            both = mul64("ARENA-TAB-005", 2, s.bitmap_len, f"span {i} 2*bitmap_len")
            if not inside(s.bitmap_off, both, 0, bitmaps_len):
                fail("ARENA-TAB-005", f"span {i}: bitmaps [{s.bitmap_off:#x}, +{both:#x}) outside BITMAPS ({bitmaps_len} bytes)")
            # 25: ARENA-TAB-010 (span bitmaps tile BITMAPS in span order)
            if s.bitmap_off < bitmaps_cursor:
                fail("ARENA-TAB-010", f"span {i}: bitmaps at {s.bitmap_off:#x} overlap the previous span's (end {bitmaps_cursor:#x})")
            if s.bitmap_off > bitmaps_cursor:
                fail("ARENA-TAB-010", f"span {i}: bitmaps at {s.bitmap_off:#x} leave a gap after {bitmaps_cursor:#x}")
            bitmaps_cursor = s.bitmap_off + both
            # 26: ARENA-TAB-006
            if not inside(s.meta_off, s.meta_len, 0, meta_len):
                fail("ARENA-TAB-006", f"span {i}: meta [{s.meta_off}, +{s.meta_len}) outside META ({meta_len} bytes)")
            self.spans.append(s)
        if prev_end != heap_end:
            if not self.spans:
                fail("ARENA-TAB-002", f"no spans but heap_len is {h.heap_len}")
            fail("ARENA-TAB-002", f"spans end at {prev_end:#x}, not at the heap end {heap_end:#x}")
        if bitmaps_cursor != bitmaps_len:
            fail("ARENA-TAB-010", f"span bitmaps end at {bitmaps_cursor:#x}, not at the end of BITMAPS ({bitmaps_len:#x} bytes)")

        # Steps 27-28 (ARENA-TAB-007, ARENA-TAB-008), root by root.
        rt = self.by_kind[ROOTS]
        prev_name = None
        for i in range(rt.length // ROOT_ENTRY_LEN):
            e = rt.offset + i * ROOT_ENTRY_LEN
            r = Root(
                index=i,
                name_off=u32(d, e),
                name_len=u32(d, e + 4),
                object=u64(d, e + 8),
                span=u32(d, e + 16),
                meta_off=u32(d, e + 20),
                meta_len=u32(d, e + 24),
                reserved=u32(d, e + 28),
            )
            if r.reserved != 0:
                fail("ARENA-TAB-007", f"root {i}: reserved is {r.reserved:#x}, not zero")
            if not inside(r.name_off, r.name_len, 0, len(strings)):
                fail("ARENA-TAB-007", f"root {i}: name [{r.name_off}, +{r.name_len}) outside STRINGS")
            if not inside(r.meta_off, r.meta_len, 0, meta_len):
                fail("ARENA-TAB-007", f"root {i}: meta [{r.meta_off}, +{r.meta_len}) outside META")
            if r.span >= len(self.spans):
                fail("ARENA-TAB-007", f"root {i}: span {r.span} is not a valid span id ({len(self.spans)} spans)")
            s = self.spans[r.span]
            if not (s.start <= r.object < s.start + s.length):
                fail("ARENA-TAB-007", f"root {i}: object {r.object:#x} is not inside span {r.span} [{s.start:#x}, {s.start + s.length:#x})")
            r.name = bytes(strings[r.name_off : r.name_off + r.name_len])
            # Python compares bytes as unsigned byte strings, a proper prefix first.
            if prev_name is not None and not (r.name > prev_name):
                fail("ARENA-TAB-008", f"root {i}: name {show(r.name)} is not greater than the previous {show(prev_name)}")
            prev_name = r.name
            self.roots.append(r)

        # Step 29 (ARENA-TAB-009)
        prod = bytes(self._section_bytes(PRODUCER))
        if len(prod) > 255:
            fail("ARENA-TAB-009", f"PRODUCER is {len(prod)} bytes, more than 255")
        try:
            self.producer = prod.decode("utf-8", errors="strict")
        except UnicodeDecodeError as exc:
            fail("ARENA-TAB-009", f"PRODUCER is not valid UTF-8: {exc}")
        self.archive_meta = bytes(self._section_bytes(ARCHIVE_META))

    def _parse(self) -> None:
        self._parse_header()
        self._check_layout()
        self._parse_sections()
        self._parse_tables()

    # -- steps 30-34: per span ----------------------------------------------------------------
    def span_meta(self, s: Span) -> bytes:
        m = self.by_kind[META].offset
        return bytes(self.data[m + s.meta_off : m + s.meta_off + s.meta_len])

    def root_meta(self, r: Root) -> bytes:
        m = self.by_kind[META].offset
        return bytes(self.data[m + r.meta_off : m + r.meta_off + r.meta_len])

    def verify_span(self, s: Span) -> None:
        d = self.data
        bm = self.by_kind[BITMAPS].offset + s.bitmap_off
        internal = d[bm : bm + s.bitmap_len]
        external = d[bm + s.bitmap_len : bm + 2 * s.bitmap_len]
        m = self.by_kind[META].offset + s.meta_off
        # 30: ARENA-SPAN-001
        computed = crc32(d[s.start : s.start + s.length], internal, external, d[m : m + s.meta_len])
        if computed != s.crc:
            fail("ARENA-SPAN-001", f"span {s.id}: CRC {s.crc:#010x} != computed {computed:#010x}")
        n = s.length // 8
        iw = [w for (w,) in struct.iter_unpack("<Q", internal)]
        xw = [w for (w,) in struct.iter_unpack("<Q", external)]
        # 31: ARENA-SPAN-002 (bits >= n of the last bitmap word)
        if n % 64 and iw:
            pad_mask = U64_MAX & ~((1 << (n % 64)) - 1)
            if iw[-1] & pad_mask:
                fail("ARENA-SPAN-002", f"span {s.id}: padding bits of the internal bitmap are set")
            if xw[-1] & pad_mask:
                fail("ARENA-SPAN-002", f"span {s.id}: padding bits of the external bitmap are set")
        # 32: ARENA-SPAN-003
        for k, (a, b) in enumerate(zip(iw, xw)):
            if a & b:
                word = 64 * k + ((a & b) & -(a & b)).bit_length() - 1
                fail("ARENA-SPAN-003", f"span {s.id}: word {word} is marked in both bitmaps")
        # 33: ARENA-SPAN-004
        ranges = [(self.spans[dep].start, self.spans[dep].start + self.spans[dep].length) for dep in s.deps]
        ranges.append((s.start, s.start + s.length))  # own id > every dep id: still sorted
        starts = [a for a, _ in ranges]
        n_int = 0
        for k, w in enumerate(iw):
            while w:
                low = w & -w
                word = 64 * k + low.bit_length() - 1
                w ^= low
                n_int += 1
                target = u64(d, s.start + 8 * word)
                j = bisect.bisect_right(starts, target) - 1
                if j < 0 or not (ranges[j][0] <= target < ranges[j][1]):
                    fail(
                        "ARENA-SPAN-004",
                        f"span {s.id}: internal slot at {s.start + 8 * word:#x} targets {target:#x}, "
                        f"outside the span and its dependencies {s.deps}",
                    )
        # 34: ARENA-SPAN-005
        n_ext = 0
        for k, w in enumerate(xw):
            while w:
                low = w & -w
                word = 64 * k + low.bit_length() - 1
                w ^= low
                n_ext += 1
                value = u64(d, s.start + 8 * word)
                if value >= len(self.externs):
                    fail(
                        "ARENA-SPAN-005",
                        f"span {s.id}: external slot at {s.start + 8 * word:#x} holds extern id {value}, "
                        f"not lower than the extern count {len(self.externs)}",
                    )
        s.internal_slots = n_int
        s.external_slots = n_ext
        s.verified = True

    def verify_all_spans(self) -> None:
        """Steps 30-34 for every span, in id order."""
        for s in self.spans:
            self.verify_span(s)

    # -- step 35: full check only -------------------------------------------------------------
    def verify_bitmaps_crc(self) -> None:
        s = self.by_kind[BITMAPS]
        computed = crc32(self.data[s.offset : s.offset + s.length])
        if computed != s.crc:
            fail("ARENA-SEC-008", f"section {s.index} (BITMAPS) CRC {s.crc:#010x} != computed {computed:#010x}")

    def verify_all(self) -> None:
        """The full check after the open-time checks: every span (steps 30-34), then step 35."""
        self.verify_all_spans()
        self.verify_bitmaps_crc()


# --------------------------------------------------------------------------------------------
# CLI


def show(b: bytes) -> str:
    """Bytes as a quoted string: printable ASCII as is, every other byte (and " and \\) as \\xNN."""
    return '"' + "".join(chr(c) if 0x20 <= c < 0x7F and c not in (0x22, 0x5C) else f"\\x{c:02x}" for c in b) + '"'


def print_listing(a: Arena, out) -> None:
    h = a.header
    print(f"arena format {h.format_major}.{h.format_minor}, {h.file_len} bytes", file=out)
    print(f"  profile        {h.profile.hex()}", file=out)
    print(f"  producer       {show(a.producer.encode())}", file=out)
    print(f"  preferred_base {h.preferred_base:#x}", file=out)
    print(f"  compat_flags   {h.compat_flags:#x}", file=out)
    print(f"  heap           [{h.heap_start:#x}, {h.heap_start + h.heap_len:#x}) {h.heap_len} bytes", file=out)
    print(f"  archive meta   {len(a.archive_meta)} bytes", file=out)
    print(f"sections ({len(a.sections)}):", file=out)
    for s in a.sections:
        print(f"  {s.index:3} kind {s.kind:3} {s.name:<13} offset {s.offset:#x} len {s.length} crc {s.crc:#010x}", file=out)
    print(f"externs ({len(a.externs)}):", file=out)
    for x in a.externs:
        print(f"  {x.id:6} {show(x.name)}", file=out)
    print(f"spans ({len(a.spans)}):", file=out)
    for s in a.spans:
        print(
            f"  {s.id:6} [{s.start:#x}, {s.start + s.length:#x}) len {s.length} deps {s.deps} "
            f"meta {s.meta_len} B slots {s.internal_slots} internal / {s.external_slots} external crc {s.crc:#010x}",
            file=out,
        )
    print(f"roots ({len(a.roots)}):", file=out)
    for r in a.roots:
        print(f"  {show(r.name)} span {r.span} object {r.object:#x} meta {r.meta_len} B", file=out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Validate and list a pycds arena file (format 1.x), per spec/format.md.")
    p.add_argument("file", help="arena file")
    g = p.add_mutually_exclusive_group()
    g.add_argument("-q", "--quiet", action="store_true", help="validate only, print nothing on success")
    g.add_argument("--roots", action="store_true", help="print only the root names, one a line")
    p.add_argument(
        "--no-spans",
        action="store_true",
        help="open-time checks only, as a loader at open (skip ARENA-SPAN-* and ARENA-SEC-008)",
    )
    args = p.parse_args(argv)
    try:
        with open(args.file, "rb") as f:
            data = f.read()
    except OSError as exc:
        print(f"arena_reader: {exc}", file=sys.stderr)
        return 2
    try:
        a = Arena(data)
        if not args.no_spans:
            a.verify_all()
    except ArenaError as exc:
        print(f"{exc.req}: {args.file}: {exc.kind}: {exc.message}", file=sys.stderr)
        return 1
    if args.roots:
        for r in a.roots:
            print(show(r.name)[1:-1])
    elif not args.quiet:
        print_listing(a, sys.stdout)
        print("OK: all checks passed" + (" (open-time checks only)" if args.no_spans else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
