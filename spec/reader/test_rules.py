#!/usr/bin/env python3
"""Rule-by-rule tests of arena_reader.py.

For every requirement id of format.md section 7 this builds (or mutates) an archive in which
that check is the FIRST to fail -- checksums that cover the mutated bytes are recomputed so
that an earlier check does not fire -- and asserts that the reader reports exactly that id.
It also checks a few files that must be accepted (unknown compat flags, another minor version,
an unknown section kind, 16-aligned objects, empty spans ...).

The archives are produced by a small writer written from spec/format.md (section 10
describes the reference writer's layout choices, which this one follows), so the tests do not
depend on the Rust implementation; run ``python3 test_rules.py [--emit DIR] [GOLD_DIR]``: with
the gold directory it also checks that this writer reproduces ``v1-minimal.arena`` byte for
byte; with ``--emit DIR`` it writes every case to DIR (plus ``expected.tsv``: file name and the
expected requirement id or ``accept``) so that other readers can be tested differentially.
"""

from __future__ import annotations

import os
import struct
import sys
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import arena_reader as ar  # noqa: E402


def crc(b) -> int:
    return zlib.crc32(bytes(b)) & 0xFFFFFFFF


def pad8(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 8)


# ---------------------------------------------------------------------------------------------
# A minimal writer (format.md sections 3-6 and 10)


class Span:
    def __init__(self, words=(), internal=(), external=(), deps=(), meta=b"", raw=None):
        # words: list of u64 values (slots hold base-relative targets / extern ids); raw: bytes
        self.raw = raw if raw is not None else b"".join(struct.pack("<Q", w) for w in words)
        self.internal = set(internal)
        self.external = set(external)
        self.deps = list(deps)
        self.meta = meta


def bitmap(bits, nwords):
    n = (nwords + 63) // 64
    v = 0
    for b in bits:
        v |= 1 << b
    return v.to_bytes(8 * n, "little")


def build(
    spans=(),
    externs=(),
    roots=(),
    producer=b"test",
    archive_meta=b"",
    profile=b"",
    preferred_base=0,
    extra_sections=(),
    format_minor=0,
    compat_flags=0,
    bitmaps_extra=b"",
):
    """roots: (name, span_id, offset_in_span, meta); bitmaps_extra: bytes appended to BITMAPS
    after the spans' bitmaps (which makes the file invalid: ARENA-TAB-010)."""
    heap = b""
    span_pos = []
    for s in spans:
        raw = pad8(s.raw)
        span_pos.append((128 + len(heap), len(raw)))
        heap += raw
    strings = b"".join(externs) + b"".join(r[0] for r in roots)
    ext_tab = b""
    off = 0
    for name in externs:
        ext_tab += struct.pack("<II", off, len(name))
        off += len(name)
    root_name_off = []
    for r in roots:
        root_name_off.append(off)
        off += len(r[0])
    meta = b"".join(s.meta for s in spans) + b"".join(r[3] for r in roots)
    deps = b""
    bitmaps = b""
    span_tab = b""
    moff = 0
    doff = 0
    for i, s in enumerate(spans):
        start, ln = span_pos[i]
        n = ln // 8
        bi = bitmap(s.internal, n)
        bx = bitmap(s.external, n)
        c = crc(heap[start - 128 : start - 128 + ln] + bi + bx + s.meta)
        span_tab += struct.pack("<QQQQIIIIII", start, ln, len(bitmaps), len(bi), doff, len(s.deps), moff, len(s.meta), c, 0)
        bitmaps += bi + bx
        deps += b"".join(struct.pack("<I", d) for d in s.deps)
        doff += len(s.deps)
        moff += len(s.meta)
    root_tab = b""
    for i, (name, sid, rel, rmeta) in enumerate(roots):
        obj = span_pos[sid][0] + rel if sid < len(span_pos) else 128 + rel
        root_tab += struct.pack("<IIQIIII", root_name_off[i], len(name), obj, sid, moff, len(rmeta), 0)
        moff += len(rmeta)
    bitmaps += bitmaps_extra
    sections = [
        (1, strings),
        (2, ext_tab),
        (3, span_tab),
        (4, deps),
        (5, root_tab),
        (6, bitmaps),
        (7, meta),
        (8, producer),
        (9, archive_meta),
    ] + list(extra_sections)
    tables_start = 128 + len(heap)
    cursor = tables_start + 24 * len(sections)
    table = b""
    body = b""
    for kind, data in sections:
        table += struct.pack("<IIQQ", kind, crc(data), cursor, len(data))
        body += pad8(data)
        cursor += len(pad8(data))
    file_len = cursor
    h = bytearray(128)
    h[0:8] = ar.MAGIC
    struct.pack_into("<HHIQII", h, 8, 1, format_minor, 128, file_len, 0, compat_flags)
    h[32:64] = profile.ljust(32, b"\0")
    struct.pack_into("<QQQQQQII", h, 64, preferred_base, 128, len(heap), tables_start, file_len - tables_start, tables_start, len(sections), crc(table))
    struct.pack_into("<I", h, 120, crc(h))
    return bytearray(bytes(h) + heap + table + body)


# ---------------------------------------------------------------------------------------------
# Checksum repair after a mutation (raw offsets, no validation)


def fix(b: bytearray, spans=True, sections=True, table=True, header=True) -> bytearray:
    """Recompute, in dependency order, span CRCs, section CRCs, the section table CRC and the
    header CRC from the (possibly mutated) raw fields, skipping anything out of range."""
    st = struct.unpack_from("<Q", b, 104)[0]
    count = struct.unpack_from("<I", b, 112)[0]
    secs = {}
    for i in range(count):
        e = st + 24 * i
        if e + 24 > len(b):
            break
        kind, _, off, ln = struct.unpack_from("<IIQQ", b, e)
        secs[kind] = (e, off, ln)
    if spans and all(k in secs for k in (3, 6, 7)):
        _, so, sl = secs[3]
        _, bo, _ = secs[6]
        _, mo, _ = secs[7]
        for i in range(sl // 56):
            e = so + 56 * i
            start, ln, boff, blen, _, _, moff, mlen = struct.unpack_from("<QQQQIIII", b, e)
            parts = (b[start : start + ln], b[bo + boff : bo + boff + 2 * blen], b[mo + moff : mo + moff + mlen])
            struct.pack_into("<I", b, e + 48, crc(b"".join(bytes(p) for p in parts)))
    if sections:
        for kind, (e, off, ln) in secs.items():
            struct.pack_into("<I", b, e + 4, crc(b[off : off + ln]))
    if table:
        struct.pack_into("<I", b, 116, crc(b[st : st + 24 * count]))
    if header:
        struct.pack_into("<I", b, 120, 0)
        struct.pack_into("<I", b, 120, crc(b[0:128]))
    return b


def section(b, kind):
    st = struct.unpack_from("<Q", b, 104)[0]
    count = struct.unpack_from("<I", b, 112)[0]
    for i in range(count):
        k, _, off, ln = struct.unpack_from("<IIQQ", b, st + 24 * i)
        if k == kind:
            return st + 24 * i, off, ln
    raise KeyError(kind)


def span_entry(b, i):
    return section(b, 3)[1] + 56 * i


def root_entry(b, i):
    return section(b, 5)[1] + 32 * i


def extern_entry(b, i):
    return section(b, 2)[1] + 8 * i


def put(b, fmt, off, *v):
    struct.pack_into(fmt, b, off, *v)
    return b


# ---------------------------------------------------------------------------------------------
# The base archive: two spans (span 1 depends on span 0), two externs, two roots, metadata.


def base() -> bytearray:
    # span 0 at 0x80: w0 -> internal 0x88, w1 = extern 0, w2 = data
    # span 1 at 0x98: w0 -> internal 0x80 (into dep 0), w1 = extern 1, w2 -> internal 0xa0 (own)
    return build(
        spans=[
            Span([0x88, 0, 0x1234], internal={0}, external={1}, meta=b"m0"),
            Span([0x80, 1, 0xA0], internal={0, 2}, external={1}, deps=[0], meta=b"m1"),
        ],
        externs=[b"None", b"len"],
        roots=[(b"a", 0, 0, b"r0"), (b"b", 1, 8, b"r1")],
        producer=b"test-rules",
        archive_meta=b"archive-meta",  # 12 bytes: 4 bytes of trailing padding
    )


def check(name, data, want):
    try:
        a = ar.Arena(bytes(data))
        a.verify_all()
        got = None
    except ar.ArenaError as e:
        got = e.req
        msg = e.message
    ok = got == want
    print(f"{'ok  ' if ok else 'FAIL'} {name}: expected {want or 'accept'}, got {got or 'accept'}" + ("" if ok or got is None else f" ({msg})"))
    return ok


def cases():
    C = []

    def case(name, want):
        def deco(f):
            C.append((name, want, f))
            return f

        return deco

    # --- accepted files
    case("base archive", None)(lambda: base())
    case("empty archive", None)(lambda: build())
    case("unknown compat_flags", None)(lambda: fix(put(base(), "<I", 28, 0xFFFFFFFF), spans=False, sections=False, table=False))
    case("other minor version", None)(lambda: fix(put(base(), "<H", 10, 7), spans=False, sections=False, table=False))
    case("unknown section kind 10 (ignored)", None)(lambda: build(extra_sections=[(10, b"future!")]))
    case("zero-length span", None)(lambda: build(spans=[Span([]), Span([5])], roots=[(b"x", 1, 0, b"")]))
    case("unaligned internal target", None)(lambda: build(spans=[Span([0x83], internal={0})]))
    case("target in a dependency", None)(lambda: build(spans=[Span([1]), Span([0]), Span([0x80], internal={0}, deps=[0])]))
    case("span of 65 words (two bitmap words)", None)(lambda: build(spans=[Span([0] * 64 + [0x80], internal={64})]))
    case("root name prefix sorts first", None)(lambda: build(spans=[Span([0])], roots=[(b"ab", 0, 0, b""), (b"abc", 0, 0, b""), (b"b", 0, 0, b"")]))
    case("non-ASCII root names, unsigned order", None)(lambda: build(spans=[Span([0])], roots=[(b"\x7f", 0, 0, b""), (b"\x80", 0, 0, b"")]))
    case("non-UTF-8 extern name", None)(lambda: build(externs=[b"\xff\xfe"]))
    case("producer of 255 bytes", None)(lambda: build(producer=b"p" * 255))

    # --- header
    case("truncated to 100 bytes", "ARENA-HDR-001")(lambda: base()[:100])
    case("empty file", "ARENA-HDR-001")(lambda: b"")
    case("bad magic", "ARENA-HDR-002")(lambda: put(base(), "B", 1, ord("a")))
    case("format_major 2 (before CRC)", "ARENA-HDR-003")(lambda: put(base(), "<H", 8, 2))
    case("format_major 0", "ARENA-HDR-003")(lambda: put(base(), "<H", 8, 0))
    case("incompat flag (before CRC)", "ARENA-HDR-004")(lambda: put(base(), "<I", 24, 1))
    case("header_len 129", "ARENA-HDR-005")(lambda: fix(put(base(), "<I", 12, 129), spans=False, sections=False, table=False))
    case("profile byte flipped", "ARENA-HDR-006")(lambda: put(base(), "B", 40, 1))
    case("file_len != length (appended bytes)", "ARENA-HDR-007")(lambda: base() + b"\0" * 8)
    case("file truncated by 8", "ARENA-HDR-007")(lambda: base()[:-8])
    case("header reserved", "ARENA-HDR-008")(lambda: fix(put(base(), "B", 126, 1), spans=False, sections=False, table=False))

    # --- layout
    hdr = dict(spans=False, sections=False, table=False)
    case("heap_start 136", "ARENA-LAY-001")(lambda: fix(put(base(), "<Q", 72, 136), **hdr))
    case("heap_len not multiple of 8", "ARENA-LAY-002")(lambda: fix(put(base(), "<Q", 80, 44), **hdr))
    case("heap past end of file", "ARENA-LAY-002")(lambda: fix(put(base(), "<Q", 80, 1 << 20), **hdr))
    case("heap_len overflows", "ARENA-LAY-002")(lambda: fix(put(base(), "<Q", 80, (1 << 64) - 8), **hdr))
    case("tables_start off by 8", "ARENA-LAY-003")(lambda: fix(put(base(), "<Q", 88, struct.unpack_from("<Q", base(), 88)[0] + 8), **hdr))
    case("tables_len short", "ARENA-LAY-004")(lambda: fix(put(base(), "<Q", 96, struct.unpack_from("<Q", base(), 96)[0] - 8), **hdr))
    case("tables_len overflows", "ARENA-LAY-004")(lambda: fix(put(base(), "<Q", 96, (1 << 64) - 1), **hdr))

    # --- section table and sections
    def st_shift():
        b = base()
        return fix(put(b, "<Q", 104, struct.unpack_from("<Q", b, 104)[0] + 8), **hdr)

    case("section_table_offset != tables_start", "ARENA-SEC-001")(st_shift)
    case("section table past end of file", "ARENA-SEC-001")(lambda: fix(put(base(), "<I", 112, 10000), **hdr))
    case("section table entry flipped", "ARENA-SEC-002")(lambda: put(base(), "B", struct.unpack_from("<Q", base(), 104)[0] + 3 * 24 + 20, 1))

    def kind_change(i, kind):
        def f():
            b = base()
            st = struct.unpack_from("<Q", b, 104)[0]
            return fix(put(b, "<I", st + 24 * i, kind), spans=False, sections=False)

        return f

    case("section kind 0", "ARENA-SEC-003")(kind_change(0, 0))
    case("section kinds not increasing", "ARENA-SEC-003")(kind_change(4, 3))
    case("section kind 9 missing (replaced by 10)", "ARENA-SEC-003")(kind_change(8, 10))
    case("no sections", "ARENA-SEC-003")(lambda: fix(put(base(), "<I", 112, 0), spans=False, sections=False))

    def sec_field(kind, field_off, value, **kw):
        def f():
            b = base()
            e, off, ln = section(b, kind)
            put(b, "<Q", e + field_off, value(off, ln))
            return fix(b, spans=False, **kw)

        return f

    case("section offset off by 8", "ARENA-SEC-004")(sec_field(5, 8, lambda off, ln: off + 8))
    case("section past end of file", "ARENA-SEC-004")(sec_field(9, 16, lambda off, ln: 1 << 20, sections=False))
    case("section len overflows", "ARENA-SEC-004")(sec_field(9, 16, lambda off, ln: (1 << 64) - 1, sections=False))
    case("sections end early (extra tail)", "ARENA-SEC-004")(
        lambda: fix(put(put(base() + b"\0" * 8, "<Q", 16, len(base()) + 8), "<Q", 96, struct.unpack_from("<Q", base(), 96)[0] + 8), spans=False, sections=False, table=False)
    )

    def pad_byte(kind):
        def f():
            b = base()
            _, off, ln = section(b, kind)
            b[off + ln] = 0x55  # first padding byte after the section
            return b

        return f

    case("non-zero padding between sections", "ARENA-SEC-005")(pad_byte(1))
    case("non-zero padding after the last section", "ARENA-SEC-005")(pad_byte(9))
    case("STRINGS byte flipped", "ARENA-SEC-006")(lambda: put(base(), "B", section(base(), 1)[1], ord("X")))
    case("unknown section kind with bad CRC", "ARENA-SEC-006")(lambda: put(build(extra_sections=[(10, b"future!")]), "B", section(build(extra_sections=[(10, b"future!")]), 10)[1], 0))

    def shorten(kind, by):
        def f():
            b = base()
            e, off, ln = section(b, kind)
            for x in range(off + ln - by, off + ln):
                b[x] = 0  # keep the new padding zero
            put(b, "<Q", e + 16, ln - by)
            return fix(b, spans=False)

        return f

    case("DEPS length not a multiple of 4", "ARENA-SEC-007")(shorten(4, 2))
    case("ROOTS length not a multiple of 32", "ARENA-SEC-007")(shorten(5, 4))
    case("EXTERNS length not a multiple of 8", "ARENA-SEC-007")(shorten(2, 4))

    # --- tables
    def tab(entry, fmt, rel, value, spans=False):
        def f():
            b = base()
            put(b, fmt, entry(b) + rel, value)
            return fix(b, spans=spans)

        return f

    case("extern name outside STRINGS", "ARENA-TAB-001")(tab(lambda b: extern_entry(b, 1), "<I", 4, 100))
    case("extern name_off+len overflow u32", "ARENA-TAB-001")(tab(lambda b: extern_entry(b, 1), "<I", 0, 0xFFFFFFFF))
    case("span reserved", "ARENA-TAB-002")(tab(lambda b: span_entry(b, 1), "<I", 52, 1))
    case("span len not multiple of 8", "ARENA-TAB-002")(tab(lambda b: span_entry(b, 1), "<Q", 8, 20))
    case("span gap", "ARENA-TAB-002")(tab(lambda b: span_entry(b, 1), "<Q", 0, 0xA0))
    case("span overlap", "ARENA-TAB-002")(tab(lambda b: span_entry(b, 1), "<Q", 0, 0x90))
    case("span 0 not at heap_start", "ARENA-TAB-002")(tab(lambda b: span_entry(b, 0), "<Q", 0, 0x88))
    case("span past the heap", "ARENA-TAB-002")(tab(lambda b: span_entry(b, 1), "<Q", 8, 32))
    case("span len overflows", "ARENA-TAB-002")(tab(lambda b: span_entry(b, 1), "<Q", 8, (1 << 64) - 8))
    case("spans end before the heap end", "ARENA-TAB-002")(tab(lambda b: span_entry(b, 1), "<Q", 8, 16))
    case("no spans but a heap", "ARENA-TAB-002")(lambda: no_spans_with_heap())
    case("deps outside DEPS", "ARENA-TAB-003")(tab(lambda b: span_entry(b, 1), "<I", 36, 2))
    case("deps_off+count overflow u32", "ARENA-TAB-003")(tab(lambda b: span_entry(b, 1), "<I", 32, 0xFFFFFFFF))
    case("dependency on itself", "ARENA-TAB-004")(tab(lambda b: section(b, 4)[1], "<I", 0, 1))
    case("span 0 with a dependency", "ARENA-TAB-004")(lambda: build(spans=[Span([0], deps=[0])]))
    case("deps not strictly increasing", "ARENA-TAB-004")(lambda: build(spans=[Span([0]), Span([0]), Span([0], deps=[1, 0])]))
    case("duplicate dependency", "ARENA-TAB-004")(lambda: build(spans=[Span([0]), Span([0]), Span([0], deps=[0, 0])]))
    case("bitmap_len wrong", "ARENA-TAB-005")(tab(lambda b: span_entry(b, 1), "<Q", 24, 16))
    case("bitmap_off misaligned", "ARENA-TAB-005")(tab(lambda b: span_entry(b, 1), "<Q", 16, 20))
    case("bitmaps outside BITMAPS", "ARENA-TAB-005")(tab(lambda b: span_entry(b, 1), "<Q", 16, 24))
    case("bitmap_off overflows", "ARENA-TAB-005")(tab(lambda b: span_entry(b, 1), "<Q", 16, (1 << 64) - 8))
    case("span 1 bitmaps overlap span 0's", "ARENA-TAB-010")(tab(lambda b: span_entry(b, 1), "<Q", 16, 0))
    case("span 1 bitmaps start inside span 0's", "ARENA-TAB-010")(tab(lambda b: span_entry(b, 1), "<Q", 16, 8))
    case("span 0 bitmaps not at offset 0", "ARENA-TAB-010")(tab(lambda b: span_entry(b, 0), "<Q", 16, 8))

    def bitmaps_gap():
        b = build(spans=[Span([0]), Span([0])], bitmaps_extra=bytes(16))
        put(b, "<Q", span_entry(b, 1) + 16, 32)  # [32, 48): inside BITMAPS, after a gap
        return fix(b)

    case("gap between span bitmaps", "ARENA-TAB-010")(bitmaps_gap)
    case("BITMAPS bytes after the last span's bitmaps", "ARENA-TAB-010")(lambda: build(spans=[Span([0])], bitmaps_extra=bytes(8)))
    case("no spans but BITMAPS not empty", "ARENA-TAB-010")(lambda: build(bitmaps_extra=bytes(8)))
    case("span meta outside META", "ARENA-TAB-006")(tab(lambda b: span_entry(b, 1), "<I", 44, 100))
    case("root reserved", "ARENA-TAB-007")(tab(lambda b: root_entry(b, 1), "<I", 28, 1))
    case("root name outside STRINGS", "ARENA-TAB-007")(tab(lambda b: root_entry(b, 1), "<I", 4, 100))
    case("root meta outside META", "ARENA-TAB-007")(tab(lambda b: root_entry(b, 1), "<I", 24, 100))
    case("root span invalid", "ARENA-TAB-007")(tab(lambda b: root_entry(b, 1), "<I", 16, 2))
    case("root object at span end", "ARENA-TAB-007")(tab(lambda b: root_entry(b, 0), "<Q", 8, 0x98))
    case("root object before span", "ARENA-TAB-007")(tab(lambda b: root_entry(b, 1), "<Q", 8, 0x90))
    case("duplicate root names", "ARENA-TAB-008")(lambda: build(spans=[Span([0])], roots=[(b"a", 0, 0, b""), (b"a", 0, 0, b"")]))
    case("roots not sorted", "ARENA-TAB-008")(lambda: build(spans=[Span([0])], roots=[(b"b", 0, 0, b""), (b"a", 0, 0, b"")]))
    case("roots signed-order trap", "ARENA-TAB-008")(lambda: build(spans=[Span([0])], roots=[(b"\x80", 0, 0, b""), (b"\x7f", 0, 0, b"")]))
    case("longer name before its prefix", "ARENA-TAB-008")(lambda: build(spans=[Span([0])], roots=[(b"ab", 0, 0, b""), (b"a", 0, 0, b"")]))
    case("producer of 256 bytes", "ARENA-TAB-009")(lambda: build(producer=b"p" * 256))
    case("producer not UTF-8", "ARENA-TAB-009")(lambda: build(producer=b"ok\xc3("))

    # --- per span
    def heap_word(span, word, value, fix_crc=True):
        def f():
            b = base()
            start = struct.unpack_from("<Q", b, span_entry(b, span))[0]
            put(b, "<Q", start + 8 * word, value)
            return fix(b) if fix_crc else b

        return f

    def bitmap_word(span, which, value):
        def f():
            b = base()
            e = span_entry(b, span)
            boff, blen = struct.unpack_from("<QQ", b, e + 16)
            put(b, "<Q", section(b, 6)[1] + boff + which * blen, value)
            return fix(b)

        return f

    case("heap byte flipped", "ARENA-SPAN-001")(heap_word(0, 2, 0x1235, fix_crc=False))
    case("span meta byte flipped (META CRC fixed)", "ARENA-SPAN-001")(
        lambda: fix(put(base(), "B", section(base(), 7)[1], ord("X")), spans=False)
    )
    case("internal bitmap padding bit", "ARENA-SPAN-002")(bitmap_word(1, 0, 0b1000 | 0b101))
    case("external bitmap padding bit", "ARENA-SPAN-002")(bitmap_word(1, 1, (1 << 63) | 0b10))
    case("word in both bitmaps", "ARENA-SPAN-003")(bitmap_word(1, 1, 0b11))
    case("internal target = own span end", "ARENA-SPAN-004")(heap_word(1, 2, 0xB0))
    case("internal target in a non-dependency", "ARENA-SPAN-004")(heap_word(0, 0, 0x98))
    case("internal target in the header", "ARENA-SPAN-004")(heap_word(1, 0, 0x10))
    case("internal target in the tables", "ARENA-SPAN-004")(heap_word(1, 0, 0x200))
    case("extern id = extern count", "ARENA-SPAN-005")(heap_word(1, 1, 2))
    case("extern id huge", "ARENA-SPAN-005")(heap_word(0, 1, 1 << 63))
    case("extern slot with no externs", "ARENA-SPAN-005")(lambda: build(spans=[Span([0], external={0})]))

    # --- BITMAPS: not checked at open; covered by the span CRCs; its CRC by the full check
    def bitmaps_crc_wrong():
        b = base()
        e, _, _ = section(b, 6)
        put(b, "<I", e + 4, struct.unpack_from("<I", b, e + 4)[0] ^ 1)
        return fix(b, spans=False, sections=False)

    def bitmaps_byte(span, fix_crc):
        def f():
            b = base()
            boff = struct.unpack_from("<Q", b, span_entry(b, span) + 16)[0]
            b[section(b, 6)[1] + boff] ^= 0b100  # span 1: unmark word 2 (internal slot)
            return fix(b) if fix_crc else b

        return f

    case("BITMAPS byte flipped (owning span's CRC fails)", "ARENA-SPAN-001")(bitmaps_byte(1, False))
    case("BITMAPS byte flipped, every CRC repaired", None)(bitmaps_byte(1, True))
    case("BITMAPS section CRC wrong (full check only)", "ARENA-SEC-008")(bitmaps_crc_wrong)

    def bitmaps_changed_span_crc_repaired():
        b = base()
        e, _, _ = section(b, 6)
        old = struct.unpack_from("<I", b, e + 4)[0]
        b = bitmaps_byte(1, True)()
        put(b, "<I", e + 4, old)  # the stale BITMAPS CRC; the span CRC matches the new bytes
        return fix(b, spans=False, sections=False)

    case("BITMAPS changed, span CRC repaired, BITMAPS CRC stale", "ARENA-SEC-008")(bitmaps_changed_span_crc_repaired)
    return C + ordering_cases() + empty_range_cases()


def ordering_cases():
    """Files with two faults: the one whose check comes first in section 7 must be reported,
    plus files that are valid although their tables share bytes (nothing forbids it)."""
    C = []

    def case(name, want, b):
        C.append((name, want, lambda: b))

    def u64_at(b, off):
        return struct.unpack_from("<Q", b, off)[0]

    b = base()
    put(b, "<I", span_entry(b, 0) + 44, 100)
    put(b, "<Q", span_entry(b, 1), 0xA0)
    case("order: span 0 TAB-006 before span 1 TAB-002", "ARENA-TAB-006", fix(b, spans=False))
    b = base()
    put(b, "<I", span_entry(b, 1) + 44, 100)
    put(b, "<Q", span_entry(b, 1) + 8, 16)
    case("order: last span TAB-006 before final tiling TAB-002", "ARENA-TAB-006", fix(b, spans=False))
    b = base()
    put(b, "<Q", span_entry(b, 0) + 24, 16)
    put(b, "<I", span_entry(b, 1) + 52, 1)
    case("order: span 0 TAB-005 before span 1 TAB-002", "ARENA-TAB-005", fix(b, spans=False))
    b = base()
    put(b, "<Q", span_entry(b, 1) + 24, 16)
    put(b, "<Q", span_entry(b, 1) + 16, 0)
    case("order: TAB-005 before TAB-010 in one span", "ARENA-TAB-005", fix(b, spans=False))
    b = base()
    put(b, "<Q", span_entry(b, 1) + 16, 0)
    put(b, "<I", span_entry(b, 1) + 44, 100)
    case("order: TAB-010 before TAB-006 in one span", "ARENA-TAB-010", fix(b, spans=False))
    b = base()
    put(b, "<Q", span_entry(b, 0) + 16, 8)
    put(b, "<Q", span_entry(b, 1), 0xA0)
    case("order: span 0 TAB-010 before span 1 TAB-002", "ARENA-TAB-010", fix(b, spans=False))
    b = build(spans=[Span([0, 0])], roots=[(b"r", 0, 0, b"")], bitmaps_extra=bytes(8))
    put(b, "<Q", span_entry(b, 0) + 8, 8)  # 1 word: bitmap_len still 8; spans end early
    case("order: final TAB-002 before final TAB-010", "ARENA-TAB-002", fix(b, spans=False))
    b = build(spans=[Span([0])], roots=[(b"r", 0, 0, b"")], bitmaps_extra=bytes(8))
    put(b, "<I", root_entry(b, 0) + 28, 1)
    case("order: final TAB-010 before roots (TAB-007)", "ARENA-TAB-010", fix(b, spans=False))
    b = base()
    e, _, _ = section(b, 6)
    put(b, "<I", e + 4, struct.unpack_from("<I", b, e + 4)[0] ^ 1)
    b[u64_at(b, span_entry(b, 1)) + 16] ^= 1  # heap byte of the last span
    case("order: SPAN-001 (last span) before SEC-008", "ARENA-SPAN-001", fix(b, spans=False, sections=False))
    b = base()
    e, _, _ = section(b, 6)
    put(b, "<I", e + 4, struct.unpack_from("<I", b, e + 4)[0] ^ 1)
    b[section(b, 1)[1]] ^= 1
    case("order: SEC-006 (STRINGS) before SEC-008", "ARENA-SEC-006", fix(b, spans=False, sections=False))
    b = base()
    put(b, "<I", span_entry(b, 1) + 44, 100)
    put(b, "<I", span_entry(b, 1) + 36, 5)
    case("order: TAB-003 before TAB-006 in one span", "ARENA-TAB-003", fix(b, spans=False))
    b = base()
    put(b, "<I", extern_entry(b, 1) + 4, 100)
    put(b, "<I", root_entry(b, 0) + 28, 1)
    case("order: TAB-001 before TAB-007", "ARENA-TAB-001", fix(b, spans=False))
    b = base()
    put(b, "<I", span_entry(b, 1) + 44, 100)
    put(b, "<I", root_entry(b, 0) + 28, 1)
    case("order: spans (TAB-006) before roots (TAB-007)", "ARENA-TAB-006", fix(b, spans=False))
    b = base()
    e, off, ln = section(b, 5)
    put(b, "<Q", e + 8, off + 8)
    b[section(b, 1)[1]] ^= 1
    case("order: SEC-004 before SEC-006", "ARENA-SEC-004", fix(b, spans=False, sections=False))
    b = base()
    e, off, ln = section(b, 1)
    b[off + ln] = 0x55
    e, off, ln = section(b, 5)
    put(b, "<Q", e + 8, off + 8)
    case("order: padding after section 0 (SEC-005) before section 4 placement (SEC-004)", "ARENA-SEC-005", fix(b, spans=False, sections=False))
    b = base()
    e, off, ln = section(b, 9)
    b[off + ln] = 0x55
    e, off, ln = section(b, 5)
    put(b, "<Q", e + 8, off + 8)
    case("order: section 4 placement (SEC-004) before trailing padding (SEC-005)", "ARENA-SEC-004", fix(b, spans=False, sections=False))
    b = base()
    e, off, ln = section(b, 4)
    put(b, "<Q", e + 16, 2)
    case("order: SEC-006 before SEC-007", "ARENA-SEC-006", fix(b, spans=False, sections=False))
    b = base()
    s1 = u64_at(b, span_entry(b, 1))
    put(b, "<Q", s1 + 8, 7)  # word 1: extern id 7 (SPAN-005)
    put(b, "<Q", s1 + 16, 0x10)  # word 2: internal target in the header (SPAN-004)
    case("order: SPAN-004 (later word) before SPAN-005 (earlier word)", "ARENA-SPAN-004", fix(b))
    b = base()
    e = span_entry(b, 1)
    boff, blen = struct.unpack_from("<QQ", b, e + 16)
    bm = section(b, 6)[1] + boff
    put(b, "<Q", bm, 0b101 | 1 << 10)
    put(b, "<Q", bm + blen, 0b011)
    case("order: SPAN-002 before SPAN-003", "ARENA-SPAN-002", fix(b))
    b = base()
    put(b, "<Q", 0x80, 0x98)
    b = fix(b)
    b[0x98 + 16] ^= 1
    case("order: span 0 SPAN-004 before span 1 SPAN-001", "ARENA-SPAN-004", b)
    case("order: TAB-008 before TAB-009", "ARENA-TAB-008", build(spans=[Span([0])], roots=[(b"b", 0, 0, b""), (b"a", 0, 0, b"")], producer=b"\xff"))
    b = base()
    put(b, "B", 125, 1)
    case("order: HDR-007 before HDR-008", "ARENA-HDR-007", fix(b, spans=False, sections=False, table=False) + bytearray(8))
    case("root in a zero-length span", "ARENA-TAB-007", build(spans=[Span([])], roots=[(b"x", 0, 0, b"")]))
    # Span bitmaps may not share bytes (they tile BITMAPS): ARENA-TAB-010.
    b = build(spans=[Span([0x80], internal={0}), Span([0x88], internal={0})])
    put(b, "<Q", span_entry(b, 1) + 16, 0)
    case("two spans sharing one pair of bitmaps", "ARENA-TAB-010", fix(b))
    # Valid: nothing in format.md forbids other tables sharing bytes.
    b = base()
    put(b, "<I", root_entry(b, 0), 0)
    put(b, "<I", root_entry(b, 0) + 4, 1)
    case("root name overlapping an extern name", None, fix(b, spans=False))
    b = base()
    put(b, "<I", root_entry(b, 1) + 20, 0)
    case("root meta overlapping span meta", None, fix(b, spans=False))
    b = build(spans=[Span([0], meta=b"abcd")])
    put(b, "<I", span_entry(b, 0) + 44, 2)
    case("META bytes referenced by nothing", None, fix(b))
    case("duplicate extern names", None, build(externs=[b"x", b"x"]))
    case("empty root name", None, build(spans=[Span([0])], roots=[(b"", 0, 0, b"")]))
    case("unknown section kind 0xffffffff", None, build(extra_sections=[(0xFFFFFFFF, b"z")]))
    return C


def empty_range_cases():
    """Zero-length ranges: `[off, off)` is inside `[0, end)` iff off <= end (format.md 2)."""
    C = []

    def mk():
        return build(spans=[Span([0]), Span([])], externs=[b"", b"e"], roots=[(b"r", 0, 0, b"")])

    def case(name, want, entry, fmt, rel, value, spans=True):
        def f():
            b = mk()
            put(b, fmt, entry(b) + rel, value(b))
            return fix(b, spans=spans)

        C.append((name, want, f))

    span1 = lambda b: span_entry(b, 1)  # noqa: E731 -- the zero-length span
    ext0 = lambda b: extern_entry(b, 0)  # noqa: E731 -- the empty extern name
    case("empty bitmaps at the end of BITMAPS", None, span1, "<Q", 16, lambda b: section(b, 6)[2])
    case("empty bitmaps past the end of BITMAPS", "ARENA-TAB-005", span1, "<Q", 16, lambda b: section(b, 6)[2] + 8)
    case("empty bitmaps at a huge offset", "ARENA-TAB-005", span1, "<Q", 16, lambda b: 1 << 62)
    case("empty bitmaps before the end of the previous span's", "ARENA-TAB-010", span1, "<Q", 16, lambda b: 8)
    case("empty meta at the end of META", None, span1, "<I", 40, lambda b: section(b, 7)[2])
    case("empty meta past the end of META", "ARENA-TAB-006", span1, "<I", 40, lambda b: section(b, 7)[2] + 1)
    case("empty meta at offset 0xffffffff", "ARENA-TAB-006", span1, "<I", 40, lambda b: 0xFFFFFFFF)
    case("empty deps at the end of DEPS", None, span1, "<I", 32, lambda b: section(b, 4)[2] // 4)
    case("empty deps past the end of DEPS", "ARENA-TAB-003", span1, "<I", 32, lambda b: section(b, 4)[2] // 4 + 1)
    case("empty extern name at the end of STRINGS", None, ext0, "<I", 0, lambda b: section(b, 1)[2], spans=False)
    case("empty extern name past the end of STRINGS", "ARENA-TAB-001", ext0, "<I", 0, lambda b: section(b, 1)[2] + 1, spans=False)
    case("empty extern name at offset 0xffffffff", "ARENA-TAB-001", ext0, "<I", 0, lambda b: 0xFFFFFFFF, spans=False)
    return C


def no_spans_with_heap():
    """An archive without spans whose heap is 8 bytes long (spans do not tile the heap)."""
    b = build(spans=[])
    # Insert 8 heap bytes after the header and shift the tables by 8.
    hb = bytearray(b[:128]) + bytearray(8) + b[128:]
    put(hb, "<Q", 16, len(hb))
    put(hb, "<Q", 80, 8)
    put(hb, "<Q", 88, 136)
    put(hb, "<Q", 104, 136)
    st = 136
    count = struct.unpack_from("<I", hb, 112)[0]
    for i in range(count):
        o = struct.unpack_from("<Q", hb, st + 24 * i + 8)[0]
        put(hb, "<Q", st + 24 * i + 8, o + 8)
    return fix(hb, spans=False)


def slug(name):
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def main(argv):
    emit = None
    if len(argv) > 2 and argv[1] == "--emit":
        emit = argv[2]
        argv = [argv[0]] + argv[3:]
        os.makedirs(emit, exist_ok=True)
        manifest = open(os.path.join(emit, "expected.tsv"), "w")
    ok = True
    for i, (name, want, f) in enumerate(cases()):
        data = f()
        ok &= check(name, data, want)
        if emit:
            fn = f"{i:03}-{slug(name)}.arena"
            with open(os.path.join(emit, fn), "wb") as out:
                out.write(bytes(data))
            manifest.write(f"{fn}\t{want or 'accept'}\n")
    if len(argv) > 1:
        # Our writer follows format.md section 10, so it must reproduce the reference
        # writer's v1-minimal.arena exactly (appendix A describes its contents).
        gold = open(os.path.join(argv[1], "v1-minimal.arena"), "rb").read()
        mine = build(
            spans=[Span([0x88, 0], internal={0}, external={1})],
            externs=[b"ext"],
            roots=[(b"main", 0, 0, b"")],
            producer=b"pycds-arena golden",
            profile=b"golden-minimal",
        )
        same = bytes(mine) == gold
        print(f"{'ok  ' if same else 'FAIL'} spec-derived writer reproduces v1-minimal.arena byte for byte")
        ok &= same
    # Every requirement id of format.md section 7 has at least one case that reports it.
    spec = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "format.md")).read()
    chapter = spec[spec.index("## 7. Validation") : spec.index("## 8.")]
    ids = [part.split("**", 1)[0] for part in chapter.split("**ARENA-")[1:]]
    covered = {want for _, want, _ in cases() if want}
    missing = [f"ARENA-{i}" for i in ids if f"ARENA-{i}" not in covered]
    print(f"{'ok  ' if not missing else 'FAIL'} every requirement id of format.md section 7 ({len(ids)}) has a case" + (f"; missing: {missing}" if missing else ""))
    ok &= not missing
    print("all rule tests passed" if ok else "SOME RULE TESTS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
