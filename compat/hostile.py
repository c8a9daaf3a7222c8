"""Hostile and broken archives: pycds must never crash or hang, the program's output must
not change, and a rejected archive gives exactly one ``pycds: warning: ...; importing
normally`` line that names the problem.

Run (the interpreter must have pycds installed; the driver itself can be any Python 3.8+)::

    python3 compat/hostile.py --python /tmp/robust-venvs/3.12/bin/python            # full
    python3 compat/hostile.py --python /tmp/robust-venvs/3.12/bin/python --quick    # CI, < 2 min

Options: ``--variants N`` (random child-process variants, default 3000, 300 with
``--quick``), ``--seed S``, ``--other-python PY`` (repeatable: interpreters whose archives
must be refused as foreign; default: sibling venvs of ``--python`` with pycds installed),
``--timeout SEC`` (a child still running after it is a hang; default 10, 6 with
``--quick``), ``--workers N``
(at most 2), ``--workdir DIR``, ``--json FILE`` (all results), ``--keep`` (keep the work
directory). The default sibling search only takes interpreters that can write archives.

What it does:

1. writes a small real program (``robustlib.write_app``: argparse, json, email.message,
   decimal, dataclasses, fractions, statistics, csv, difflib, ipaddress, ... plus its own
   module ``helpers`` and package ``mylib``), runs it plainly (the reference stdout), then
   TRACE + DUMP, and a clean SHARE run (the set of modules served);
2. in-process sweeps (one interpreter calls ``pycds.load`` / ``archive[name]`` on many
   variants; exhaustive where it is cheap): every truncation length over the header and
   the tables and a sample through the heap; every single-bit flip of the header and the
   tables except BITMAPS (all must be refused at open); a sample of flips in BITMAPS and in
   the heap (accepted at open, refused when the owning span is loaded);
3. child-process variants, each one run as ``PYCDSMODE=SHARE PYCDSVERBOSE=2 python main.py``
   with a timeout, at most 2 at a time: truncations, single/multi-bit flips, byte
   overwrites, swapped and shuffled 4 KiB blocks, swapped sections and section-table
   entries, appended bytes, special files (empty, directory, FIFO, devices, unreadable
   file and directory, symlink loop, dangling symlink, garbage, ...), archives of other
   CPython versions, the archive truncated or overwritten in place while in use, AUTO mode
   repairing damaged archives, and "malicious" variants whose checksums are recomputed
   (informational: the trust model makes no promise about their output, only no crash;
   forged heaps run with ``PYCDS_CHECK=full``, which checks every object at load);
4. the archive-permission cases: an archive or directory others can write is refused with
   a message about permissions; an archive only its owner can change is used (also in a
   sticky directory, and in a directory writable by the user's own group).

Oracles for every child: no crash (no negative return code, no "Fatal Python error" /
"Segmentation fault" / Rust panic in stderr), no hang, stdout and exit status equal to the
plain run, at most one ``pycds: warning:`` line, and the outcome the archive's layout
predicts for the bytes that changed: a change in the header or tables is refused at open;
a change in the heap bytes or bitmaps of a span the program loads is refused when that
span is loaded (the warning names that module); a change only in spans the program never
loads is not noticed (``accepted-unused``). Malicious variants may crash CPython when the
forged byte is in bytecode or an exception table (it does not verify bytecode, for a .pyc
either): reported as notes. Failures explained by a known bug of ``compat/BUGS.md`` are
tagged with it. Exit status 1 if any oracle failed.
"""

import argparse
import concurrent.futures
import glob
import gzip
import json
import os
import random
import shutil
import struct
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import robustlib as R  # noqa: E402

# Runs inside the interpreter under test: many variants of one file, in one process.
SWEEPER = r'''
import json, os, re, sys
import pycds
job = json.load(open(sys.argv[1]))
orig = open(job["orig"], "rb").read()
path = job["path"]
with open(path, "wb") as f:
    f.write(orig)
fd = os.open(path, os.O_RDWR)
pfd = os.open(job["progress"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
counts = {}
examples = {}
def norm(stage, e):
    t = "%s: %s" % (type(e).__name__, e)
    t = t.replace(path, "ARCHIVE")
    t = re.sub(r"0x[0-9a-fA-F]+", "X", t)
    t = re.sub(r"\d+", "N", t)
    return "%s: %s" % (stage, t)
def note(key, item):
    counts[key] = counts.get(key, 0) + 1
    examples.setdefault(key, item)
accepted = 0
for i, item in enumerate(job["items"]):
    os.pwrite(pfd, json.dumps(item).encode().ljust(64), 0)
    kind = item[0]
    if kind == "trunc":          # lengths come in decreasing order
        os.ftruncate(fd, item[1])
    else:                        # flip: bit index
        off, bit = divmod(item[1], 8)
        os.pwrite(fd, bytes([orig[off] ^ (1 << bit)]), off)
    try:
        a = pycds.load(path)
    except pycds.PycdsError as e:
        note(norm("rejected at open", e), item)
    except BaseException as e:
        note(norm("UNEXPECTED exception at open", e), item)
    else:
        accepted += 1
        if kind == "flipload":
            for name in item[2]:
                try:
                    a[name]
                except pycds.PycdsError as e:
                    note(norm("rejected at span load", e), item)
                except BaseException as e:
                    note(norm("UNEXPECTED exception at span load", e), item)
                else:
                    note("ACCEPTED: span loaded", item)
        else:
            note("ACCEPTED at open", item)
        del a
    if kind != "trunc":
        os.pwrite(fd, orig[off:off + 1], off)
    if accepted > 3000:          # each open archive keeps its descriptor: stop early
        note("STOPPED: too many archives accepted", item)
        break
json.dump({"counts": counts, "examples": examples, "done": i + 1}, open(job["result"], "w"))
'''

# Runs in SHARE mode: loads some modules, then modifies the archive in place (truncate or
# overwrite) and runs the test program, whose remaining modules come from spans not loaded
# yet. argv: main.py, truncate|overwrite, offset.
IN_USE = r'''
import os, sys, json, runpy
path = os.environ["PYCDSARCHIVE"]
main, how, offset = sys.argv[1], sys.argv[2], int(sys.argv[3])
if how == "truncate":
    os.truncate(path, offset)
else:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(b"\xa5" * 65536)
sys.argv = [main]
sys.path.insert(0, os.path.dirname(main))
runpy.run_path(main, run_name="__main__")
'''


# Runs inside the interpreter under test: the file ranges of the bytecode and of the
# exception tables of every archived code object (argv: archive, JSON {root: object offset}).
BYTECODE_MAP = r'''
import json, sys, types, pycds
a = pycds.load(sys.argv[1])
roots = json.loads(sys.argv[2])
size = int(sys.argv[3])
bs = types.CodeType.__basicsize__
out = []
for name, obj in roots.items():
    co = a[name]
    if not isinstance(co, types.CodeType):
        continue  # an extension module's root (only its location is archived)
    base = id(co) - obj
    stack = [co]
    while stack:
        c = stack.pop()
        off = id(c) - base
        out.append(["bytecode", off + bs, off + bs + len(c.co_code)])
        et = c.co_exceptiontable
        eoff = id(et) - base
        if et and 0 <= eoff < size:
            out.append(["exception table", eoff, eoff + sys.getsizeof(et)])
        stack.extend(k for k in c.co_consts if isinstance(k, types.CodeType))
print(json.dumps(out))
'''


class Ctx:
    """Everything the variants need: the interpreter, the program and its archive."""

    def __init__(self, args, work):
        self.python = args.python
        self.work = work
        self.app = os.path.join(work, "app")
        self.main = R.write_app(self.app)
        self.archive = os.path.join(work, "app.img")
        self.list = os.path.join(work, "app.lst")
        self.vdir = os.path.join(work, "variants")
        os.makedirs(self.vdir)
        self.plain = None
        self.orig = None
        self.layout = None
        self.served = None
        self.used_spans = None
        self.counter = 0
        self.lock = threading.Lock()
        self.code_ranges = []

    def code_region(self, off):
        if off is None:
            return None
        for kind, a, b in self.code_ranges:
            if a <= off < b:
                return kind
        return None

    def fresh_path(self, suffix=".img"):
        with self.lock:
            self.counter += 1
            return os.path.join(self.vdir, "v%06d%s" % (self.counter, suffix))


class Task:
    """One child-process run. ``make(ctx)`` prepares the archive and returns
    ``(archive path, prediction, damaged spans, cleanup paths)``."""

    def __init__(self, category, label, make, informational=False, xfail=False,
                 mention=None, env=None, wrapper=(), mode="SHARE", cmd=None, timeout=60,
                 after=None, documented=False, target=None):
        self.category = category
        self.label = label
        self.make = make
        self.informational = informational
        self.xfail = xfail
        self.mention = mention          # substrings, one of which the warning must contain
        self.env = env or {}
        self.wrapper = list(wrapper)
        self.mode = mode
        self.cmd = cmd                  # None: run the test program
        self.timeout = timeout
        self.after = after              # extra check after the run: fn(ctx, path) -> [failures]
        self.documented = documented    # declared unsupported by the documentation
        self.target = target            # file offset of a single changed byte, if known


# -- predictions -------------------------------------------------------------------------

def predict(ctx, new):
    """What a conforming reader must do with ``new`` in this program:
    ``('open'|'span-load'|'unused'|'unchanged', damaged used span ids)``."""
    orig, lay = ctx.orig, ctx.layout
    if len(new) != len(orig):
        return "open", set()
    offs = R.changed_offsets(orig, new)
    if not offs:
        return "unchanged", set()
    spans = set()
    for o in offs:
        kind, what = lay.classify(o)
        if kind == "open":
            return "open", set()
        spans.add(what)
    used = spans & ctx.used_spans
    return ("span-load", used) if used else ("unused", set())


def bytes_task(category, label, mutate, informational=False, env=None, mode="SHARE",
               target=None):
    """A task whose archive is ``mutate(bytearray of the original)``."""

    def make(ctx):
        buf = bytearray(ctx.orig)
        new = mutate(buf)
        new = bytes(new if new is not None else buf)
        path = ctx.fresh_path()
        with open(path, "wb") as f:
            f.write(new)
        pred, spans = predict(ctx, new) if not informational else (None, set())
        return path, pred, spans, [path]

    return Task(category, label, make, informational=informational, env=env, mode=mode,
                target=target)


# -- mutation generators ------------------------------------------------------------------

def targets(lay, used_spans):
    """Named byte populations to aim mutations at: ``{name: [(start, end), ...]}``."""
    t = {"file": [(0, lay.file_len)]}
    for name, a, b in lay.regions():
        if b > a:
            t.setdefault(name if name != "heap" else "heap-all", []).append((a, b))
    used, unused = [], []
    for i, s in enumerate(lay.spans):
        if s["len"]:
            (used if i in used_spans else unused).append((s["start"], s["start"] + s["len"]))
    if used:
        t["heap-used"] = used
    if unused:
        t["heap-unused"] = unused
    t.pop("heap-all", None)
    return t


def pick_offset(rng, ranges):
    total = sum(b - a for a, b in ranges)
    x = rng.randrange(total)
    for a, b in ranges:
        if x < b - a:
            return a + x
        x -= b - a
    raise AssertionError


def gen_flip1(rng, tg):
    name = rng.choice(sorted(tg))
    off = pick_offset(rng, tg[name])
    bit = rng.randrange(8)

    def mutate(buf):
        buf[off] ^= 1 << bit
    return "%s@%d.%d" % (name, off, bit), mutate


def gen_flipn(rng, tg, file_len):
    k = rng.choice([2, 3, 4, 8, 16, 32])
    if rng.random() < 0.5:  # a burst inside 8 bytes
        name = rng.choice(sorted(tg))
        start = min(pick_offset(rng, tg[name]), file_len - 8)
        bits = rng.sample(range(64), min(k, 64))
        spots = [(start + b // 8, b % 8) for b in bits]
        label = "burst%d:%s@%d" % (k, name, start)
    else:                   # scattered over the whole file
        spots = [(rng.randrange(file_len), rng.randrange(8)) for _ in range(k)]
        label = "scatter%d:%s" % (k, ",".join(str(o) for o, _ in spots[:4]))

    def mutate(buf):
        for o, b in spots:
            buf[o] ^= 1 << b
    return label, mutate


def gen_overwrite(rng, tg, file_len):
    name = rng.choice(sorted(tg))
    off = pick_offset(rng, tg[name])
    n = min(rng.choice([1, 2, 4, 8, 16, 64, 512, 4096]), file_len - off)
    fill = rng.choice(["random", "zero", "ff"])
    data = {"random": bytes(rng.randrange(256) for _ in range(n)),
            "zero": bytes(n), "ff": b"\xff" * n}[fill]

    def mutate(buf):
        buf[off:off + n] = data
    return "%s@%d+%d:%s" % (name, off, n, fill), mutate


def gen_blockswap(rng, file_len, k=2):
    nblocks = file_len // 4096
    blocks = rng.sample(range(nblocks), k)
    perm = blocks[:]
    while perm == blocks:
        rng.shuffle(perm)

    def mutate(buf):
        old = {b: bytes(buf[b * 4096:(b + 1) * 4096]) for b in blocks}
        for dst, src in zip(blocks, perm):
            buf[dst * 4096:(dst + 1) * 4096] = old[src]
    return "blocks %s <- %s" % (blocks, perm), mutate


# Interesting values for header and table fields in the "malicious" variants.
EVIL = [0, 1, 7, 8, 127, 128, 0xFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 1 << 32, 1 << 40,
        (1 << 63) - 1, 1 << 63, (1 << 64) - 1, (1 << 64) - 8]


def gen_recrc_tables(rng, lay):
    """Change one bit or one field of the header or a table, then recompute every CRC."""
    names = ["header", "section-table", "STRINGS", "EXTERNS", "SPANS", "ROOTS", "META",
             "PRODUCER", "ARCHIVE_META"]
    regions = {n: (a, b) for n, a, b in lay.regions()}
    name = rng.choice([n for n in names if n in regions and regions[n][1] > regions[n][0]])
    a, b = regions[name]
    if name == "header":
        b = 116  # the CRC fields would be recomputed anyway
    if rng.random() < 0.5:
        off, bit = rng.randrange(a, b), rng.randrange(8)
        label = "%s@%d.%d" % (name, off, bit)

        def mutate(buf):
            buf[off] ^= 1 << bit
            return R.fix_crcs(buf)
    else:
        width = rng.choice([4, 8])
        off = a + rng.randrange(max(1, (b - a) // width)) * width
        off = min(off, b - width) if b - a >= width else a
        value = rng.choice(EVIL + [lay.file_len, lay.heap_len, lay.tables_start,
                                   rng.randrange(1 << 32)]) & ((1 << (8 * width)) - 1)
        label = "%s@%d=u%d:%#x" % (name, off, 8 * width, value)

        def mutate(buf):
            struct.pack_into("<Q" if width == 8 else "<I", buf, off, value)
            return R.fix_crcs(buf)
    return label, mutate


def gen_recrc_heap(rng, lay, used_spans):
    """Change one bit of a span the program loads, then recompute its CRC (and the rest)."""
    ranges = [(s["start"], s["start"] + s["len"]) for i, s in enumerate(lay.spans)
              if i in used_spans and s["len"]]
    off, bit = pick_offset(rng, ranges), rng.randrange(8)

    def mutate(buf):
        buf[off] ^= 1 << bit
        return R.fix_crcs(buf)
    return "span %d @%d.%d" % (lay.span_at(off), off, bit), mutate, off


def rebuild_tables(orig, lay, swap=None, fix=False):
    """A copy of the archive whose tables are rebuilt with the contents of two sections
    exchanged (``swap=(kind_a, kind_b)``), section offsets recomputed, and (if ``fix``)
    every CRC recomputed."""
    kinds = sorted(lay.sections)
    contents = {}
    for k in kinds:
        _i, _crc, off, ln = lay.sections[k]
        contents[k] = bytes(orig[off:off + ln])
    if swap:
        a, b = swap
        contents[a], contents[b] = contents[b], contents[a]
    out = bytearray(orig[:lay.tables_start])
    table_at = len(out)
    out += bytes(24 * len(kinds))
    for idx, k in enumerate(kinds):
        out += bytes(R.align8(len(out)) - len(out))
        crc = lay.sections[k][1]
        struct.pack_into("<IIQQ", out, table_at + 24 * idx, k, crc, len(out), len(contents[k]))
        out += contents[k]
    out += bytes(R.align8(len(out)) - len(out))
    struct.pack_into("<Q", out, 16, len(out))                       # file_len
    struct.pack_into("<Q", out, 96, len(out) - lay.tables_start)    # tables_len
    if fix:
        R.fix_crcs(out)
    return bytes(out)


def swap_table_entries(orig, lay, i, j, fix=False):
    buf = bytearray(orig)
    a, b = lay.tables_start + 24 * i, lay.tables_start + 24 * j
    buf[a:a + 24], buf[b:b + 24] = buf[b:b + 24], buf[a:a + 24]
    if fix:
        R.fix_crcs(buf)
    return bytes(buf)


def swap_roots(orig, lay, name_a, name_b):
    """Point root ``name_a`` at ``name_b``'s object and vice versa, CRCs recomputed."""
    buf = bytearray(orig)
    ro, _rl = lay.section("ROOTS")
    idx = {r["name"]: i for i, r in enumerate(lay.roots)}
    ea, eb = ro + 32 * idx[name_a], ro + 32 * idx[name_b]
    fa, fb = bytes(buf[ea + 8:ea + 20]), bytes(buf[eb + 8:eb + 20])  # object + span
    buf[ea + 8:ea + 20], buf[eb + 8:eb + 20] = fb, fa
    return bytes(R.fix_crcs(buf))


# -- task lists ---------------------------------------------------------------------------

def random_tasks(ctx, rng, n):
    lay, tg = ctx.layout, targets(ctx.layout, ctx.used_spans)
    mix = [("flip1", 0.30), ("flipN", 0.15), ("overwrite", 0.15), ("block-swap", 0.08),
           ("block-shuffle", 0.04), ("recrc-tables", 0.13), ("recrc-heap", 0.05),
           ("map-flip1", 0.06), ("map-truncate", 0.04)]
    tasks = []
    for i in range(n):
        x, cat = rng.random(), mix[-1][0]
        for name, w in mix:
            if x < w:
                cat = name
                break
            x -= w
        if cat in ("flip1", "map-flip1"):
            label, m = gen_flip1(rng, tg)
        elif cat == "flipN":
            label, m = gen_flipn(rng, tg, lay.file_len)
        elif cat == "overwrite":
            label, m = gen_overwrite(rng, tg, lay.file_len)
        elif cat == "block-swap":
            label, m = gen_blockswap(rng, lay.file_len, 2)
        elif cat == "block-shuffle":
            label, m = gen_blockswap(rng, lay.file_len, rng.randrange(3, 9))
        elif cat == "recrc-tables":
            label, m = gen_recrc_tables(rng, lay)
        elif cat == "recrc-heap":
            label, m, target = gen_recrc_heap(rng, lay, ctx.used_spans)
        else:  # map-truncate
            length = rng.randrange(lay.file_len)
            label, m = "len %d" % length, (lambda buf, n=length: buf[:n])
        env = {"PYCDS_LOAD": "map"} if cat.startswith("map-") else None
        if cat == "recrc-heap":
            # Objects forged behind valid checksums: the import hook trusts an archive like
            # a .pyc (spec/security.md) and may crash on one by default; PYCDS_CHECK=full
            # is the mode that checks every object again, so it must refuse them.
            env = {"PYCDS_CHECK": "full"}
        tasks.append(bytes_task(cat, label, m, informational=cat.startswith("recrc"), env=env,
                                target=target if cat == "recrc-heap" else None))
    return tasks


def truncation_tasks(ctx, rng, quick):
    lay = ctx.layout
    header = list(range(0, 129))
    if quick:
        header = sorted(rng.sample(header, 17))
    tables = sorted(rng.sample(range(lay.tables_start, lay.file_len), 20 if quick else 200))
    heap = sorted(rng.sample(range(129, lay.tables_start), 10 if quick else 100))
    tasks = []
    for cat, lengths in (("truncate-header", header), ("truncate-tables", tables),
                         ("truncate-heap", heap)):
        for n in lengths:
            tasks.append(bytes_task(cat, "len %d" % n, lambda buf, n=n: buf[:n]))
    for extra in (1, 7, 8, 4096):
        for fill in ("zero", "random"):
            data = bytes(extra) if fill == "zero" else bytes(rng.randrange(256) for _ in range(extra))
            tasks.append(bytes_task("append", "+%d %s" % (extra, fill),
                                    lambda buf, d=data: buf + d))
    return tasks


def section_tasks(ctx, rng, quick):
    lay, orig = ctx.layout, ctx.orig
    kinds = sorted(lay.sections)
    pairs = [(a, b) for i, a in enumerate(kinds) for b in kinds[i + 1:]]
    idx_pairs = [(i, j) for i in range(len(kinds)) for j in range(i + 1, len(kinds))]
    if quick:
        pairs = rng.sample(pairs, 8)
        idx_pairs = rng.sample(idx_pairs, 8)
    tasks = []
    for a, b in pairs:
        label = "%s<->%s" % (R.KINDS[a], R.KINDS[b])
        tasks.append(bytes_task("section-swap", label,
                                lambda buf, a=a, b=b: rebuild_tables(orig, lay, swap=(a, b))))
        tasks.append(bytes_task("recrc-section-swap", label,
                                lambda buf, a=a, b=b: rebuild_tables(orig, lay, swap=(a, b),
                                                                     fix=True),
                                informational=True))
    for i, j in idx_pairs:
        label = "entries %d<->%d" % (i, j)
        tasks.append(bytes_task("section-entry-swap", label,
                                lambda buf, i=i, j=j: swap_table_entries(orig, lay, i, j)))
        tasks.append(bytes_task("recrc-section-entry-swap", label,
                                lambda buf, i=i, j=j: swap_table_entries(orig, lay, i, j, True),
                                informational=True))
    served = sorted(ctx.served)
    for _ in range(5 if quick else 20):
        a, b = rng.sample(served, 2)
        tasks.append(bytes_task("recrc-root-swap", "%s<->%s" % (a, b),
                                lambda buf, a=a, b=b: swap_roots(orig, lay, a, b),
                                informational=True))
    return tasks


def caps_wrapper():
    """A command prefix that makes permission bits apply to this (root) user, or ()."""
    if os.geteuid() != 0:
        return ()
    if shutil.which("setpriv"):
        return ("setpriv", "--bounding-set=-dac_override,-dac_read_search", "--")
    return None


def special_tasks(ctx, rng):
    tasks = []

    def special(label, build, mention, wrapper=(), category="special", pred="open", **kw):
        def make(c):
            path, cleanup = build(c)
            return path, pred, set(), cleanup
        tasks.append(Task(category, label, make, mention=mention, wrapper=wrapper, **kw))

    def file_with(data):
        def build(c):
            p = c.fresh_path()
            with open(p, "wb") as f:
                f.write(data)
            return p, [p]
        return build

    special("zero-length file", file_with(b""), ["too short", "need 128"])
    for n in (1, 127, 128, 4096, 1 << 20):
        special("garbage %d bytes" % n, file_with(os.urandom(n)), ["too short", "magic"])
    special("magic + garbage", file_with(R.MAGIC + os.urandom(4088)), ["checksum", "version",
                                                                       "header"])
    special("header only", file_with(ctx.orig[:128]), ["bytes", "length"])
    special("header only, file_len and CRC fixed",
            file_with(bytes(R.fix_crcs(bytearray(ctx.orig[:128])[:16]
                                       + struct.pack("<Q", 128) + ctx.orig[24:128]))),
            ["heap", "tables", "section", "layout", "length", "bytes"])
    special("text file", file_with(R.MAIN_PY.encode()), ["magic"])
    special("gzip of the archive", file_with(gzip.compress(ctx.orig, 1)), ["magic"])
    special("NUL bytes, archive size", file_with(bytes(len(ctx.orig))), ["magic"])

    def pyc(c):
        r = R.run([c.python, "-c", "import py_compile,sys; print(py_compile.compile(sys.argv[1],"
                   " cfile=sys.argv[2]))", os.path.join(c.app, "helpers.py"),
                   c.fresh_path(".pyc")], timeout=60)
        p = r.out.strip()
        return p, [p]
    special("a .pyc file", pyc, ["magic", "too short"])

    def sparse(c):
        p = c.fresh_path()
        with open(p, "wb") as f:
            f.write(c.orig)
            f.truncate(4 << 30)
        return p, [p]
    special("archive extended to a 4 GiB sparse file", sparse, ["bytes"])

    def directory(c):
        p = c.fresh_path(".dir")
        os.mkdir(p)
        return p, [p]
    special("a directory", directory, ["not a regular file"])

    def fifo(c):
        p = c.fresh_path(".fifo")
        os.mkfifo(p)
        return p, [p]
    special("a FIFO (nobody writes)", fifo, ["not a regular file"], timeout=30)
    for dev in ("/dev/null", "/dev/zero", "/dev/urandom"):
        if os.path.exists(dev):
            special(dev, lambda c, d=dev: (d, []), ["not a regular file"], timeout=30)
    special("missing file", lambda c: (c.fresh_path(".missing"), []),
            ["No such file", "not found"])

    def dangling(c):
        p = c.fresh_path(".lnk")
        os.symlink(p + ".nowhere", p)
        return p, [p]
    special("dangling symlink", dangling, ["No such file"])

    def loop(c):
        p = c.fresh_path(".loop")
        os.symlink(p, p)
        return p, [p]
    special("symlink loop (to itself)", loop, ["symbolic links", "loop"])

    def loop2(c):
        a, b = c.fresh_path(".la"), c.fresh_path(".lb")
        os.symlink(b, a)
        os.symlink(a, b)
        return a, [a, b]
    special("symlink loop (two links)", loop2, ["symbolic links", "loop"])

    def notdir(c):
        return os.path.join(c.main, "app.img"), []
    special("path through a regular file (ENOTDIR)", notdir, ["Not a directory"])

    def symlink_ok(c):
        p = c.fresh_path(".lnk")
        os.symlink(c.archive, p)
        return p, "unchanged", set(), [p]
    tasks.append(Task("special", "symlink to the good archive", symlink_ok))

    wrapper = caps_wrapper()
    if wrapper is None:
        print("note: running as root without setpriv: the unreadable-file cases are skipped")
    else:
        def unreadable(c):
            p = c.fresh_path()
            shutil.copyfile(c.archive, p)
            os.chmod(p, 0)
            return p, [p]
        special("file without read permission", unreadable, ["Permission denied"],
                wrapper=wrapper)

        def unreadable_dir(c):
            d = c.fresh_path(".d")
            os.mkdir(d)
            p = os.path.join(d, "app.img")
            shutil.copyfile(c.archive, p)
            os.chmod(d, 0)
            return p, [d]
        special("file in a directory without search permission", unreadable_dir,
                ["Permission denied"], wrapper=wrapper)

    special("PYCDSARCHIVE set to the empty string", lambda c: ("", []), ["PYCDSARCHIVE"],
            pred=None)
    return tasks


def other_version_tasks(ctx, others):
    tasks = []
    for py in others:
        ver = R.interpreter_version(py)

        def make(c, py=py):
            p = c.fresh_path()
            lst = c.fresh_path(".lst")
            R.trace_and_dump(py, [c.main], lst, p, cwd=c.work)
            return p, "open", set(), [p, lst]
        tasks.append(Task("other-version", "archive of %s (%s)" % (ver, py), make,
                          mention=["different interpreter", "version"]))
    return tasks


def in_use_tasks(ctx):
    """The archive modified in place while the process uses it (read strategy: the
    spans loaded later fail their checks; map strategy: documented as unsupported)."""
    lay = ctx.layout
    span = lay.spans[lay.root_span["argparse"]]
    mid = span["start"] + span["len"] // 2
    tasks = []
    for how, offset in (("truncate", mid), ("overwrite", mid)):
        # Truncation damages every span (heap bytes or bitmaps) from the offset on; the
        # one warning names whichever of them the program loads first.
        damaged = ({lay.root_span["argparse"]} if how == "overwrite" else
                   {i for i, sp in enumerate(lay.spans)
                    if sp["start"] + sp["len"] > offset or sp["bitmap_off"] >= offset})
        for strategy in ("read", "map"):
            def make(c, damaged=damaged):
                p = c.fresh_path()
                shutil.copyfile(c.archive, p)
                return p, "span-load", damaged, [p]
            cmd = ["-c", IN_USE, ctx.main, how, str(offset)]
            tasks.append(Task("in-use-%s" % strategy,
                              "%s at %d (inside argparse's span) after start-up" % (how, offset),
                              make, env={"PYCDS_LOAD": strategy}, cmd=cmd,
                              documented=(strategy == "map" and how == "truncate"),
                              informational=(strategy == "map"),
                              mention=["argparse"] if how == "overwrite" else
                              ["I/O error", "failed to fill"]))
    return tasks


def auto_tasks(ctx, rng, quick):
    """AUTO mode on damaged archives: no warning, normal output, and the archive is
    replaced by a good one (a SHARE run afterwards serves every module, no warning)."""
    lay = ctx.layout
    used = sorted(ctx.used_spans)
    s = lay.spans[rng.choice(used)]
    cases = [
        ("truncated tables", lambda buf: buf[:lay.tables_start + 100]),
        ("flip in the header", lambda buf: buf.__setitem__(20, buf[20] ^ 1)),
        ("flip in a used span", lambda buf: buf.__setitem__(s["start"] + 40,
                                                            buf[s["start"] + 40] ^ 0x10)),
        ("garbage", lambda buf: os.urandom(5000)),
        ("zero-length", lambda buf: b""),
        ("flip in META", lambda buf: buf.__setitem__(lay.section("META")[0] + 3,
                                                     buf[lay.section("META")[0] + 3] ^ 4)),
        ("block swap", gen_blockswap(rng, lay.file_len)[1]),
        ("other 4 KiB overwrite", lambda buf: buf.__setitem__(slice(8192, 12288),
                                                              bytes(4096))),
    ]
    if quick:
        cases = cases[:4]
    tasks = []
    for label, m in cases:
        t = bytes_task("auto-repair", label, m, mode="AUTO")
        t.after = check_repaired
        tasks.append(t)
    return tasks


def check_repaired(ctx, path):
    r = R.run([ctx.python, ctx.main], env=R.base_env(PYCDSMODE="SHARE", PYCDSARCHIVE=path,
                                                     PYCDSVERBOSE="2"),
              cwd=ctx.work, timeout=60)
    lines = R.pycds_lines(r.err)
    fails = []
    if lines.warnings:
        fails.append("after AUTO, SHARE warns: %s" % lines.warnings[0])
    if set(lines.served) != ctx.served:
        fails.append("after AUTO, SHARE serves %d modules, clean archive %d"
                     % (len(set(lines.served)), len(ctx.served)))
    if r.out != ctx.plain.out:
        fails.append("after AUTO, SHARE output differs")
    return fails


def permission_tasks(ctx):
    """Archives other users can change are refused (like ssh's StrictModes) with a message
    saying how to fix the permissions; an archive only its owner can change is used,
    also in a sticky directory (like /tmp) and in a directory writable by the user's own
    group (user private groups)."""
    tasks = []
    other_gid = next(g for g in range(4242, 5000) if g != os.getegid())

    def case(label, file_mode, dir_mode, refused, dir_group=None):
        def make(c):
            d = c.fresh_path(".perm")
            os.mkdir(d)
            p = os.path.join(d, "app.img")
            shutil.copyfile(c.archive, p)
            os.chmod(p, file_mode)
            os.chmod(d, dir_mode)
            if dir_group is not None:
                os.chown(d, -1, dir_group)
            return p, "open" if refused else "unchanged", set(), [d]
        tasks.append(Task("permissions", label, make,
                          mention=["writable", "replace"] if refused else None))

    case("archive o+w (0646)", 0o646, 0o755, True)
    case("archive g+w (0664)", 0o664, 0o755, True)
    case("directory o+w (0757), archive 0644", 0o644, 0o757, True)
    case("directory g+w (0775) of another group, archive 0644", 0o644, 0o775, True,
         dir_group=other_gid)
    case("directory g+w (0775) of the user's group, archive 0644", 0o644, 0o775, False,
         dir_group=os.getegid())
    case("sticky directory (1777), archive 0644", 0o644, 0o1777, False)
    return tasks


# -- running ------------------------------------------------------------------------------

def run_task(ctx, task):
    """Run one task; an error of the harness itself is reported as a failure."""
    try:
        return run_task_unguarded(ctx, task)
    except Exception as exc:  # pragma: no cover - reported, never hidden
        import traceback
        return {"category": task.category, "label": task.label, "outcome": "harness-error",
                "signature": "harness error: %s" % exc, "failures": [
                    "HARNESS ERROR: %s" % traceback.format_exc()[-1500:]],
                "notes": [], "xfail": task.xfail, "informational": False, "seconds": 0,
                "warning": None, "stderr_tail": None}


def run_task_unguarded(ctx, task):
    t0 = time.monotonic()
    path, pred, spans, cleanup = task.make(ctx)
    env = R.base_env(PYCDSMODE=task.mode, PYCDSARCHIVE=path, PYCDSVERBOSE="2", **task.env)
    args = [ctx.main] if task.cmd is None else task.cmd
    res = R.run(task.wrapper + [ctx.python] + args, env=env, cwd=ctx.work,
                timeout=min(task.timeout, ctx.timeout))
    failures, notes = [], []
    crash = R.crash_reason(res)
    if crash:
        failures.append(("HANG: " if res.timed_out else "CRASH: ") + crash)
    if not res.timed_out:
        if res.out != ctx.plain.out:
            failures.append("stdout differs from the plain run")
        if res.rc != 0:
            failures.append("exit status %s" % res.rc)
    lines = R.pycds_lines(res.err)
    served = set(lines.served)
    warnings = lines.warnings
    if len(warnings) > 1:
        outcome = "multiple-warnings"
        failures.append("%d warning lines" % len(warnings))
    elif warnings:
        w = warnings[0]
        if "cannot use archive" in w:
            outcome = "rejected-at-open"
        elif "is damaged" in w:
            outcome = "rejected-at-span-load"
        else:
            outcome = "warned-other"
        if not w.endswith("; importing normally"):
            failures.append("warning does not end with '; importing normally'")
        if path and path not in w and outcome != "warned-other":
            failures.append("warning does not name the archive")
        if task.mention and not any(m.lower() in w.lower() for m in task.mention):
            failures.append("warning does not mention %s" % " / ".join(task.mention))
    elif task.mode == "AUTO":
        outcome = "auto-no-warning"
    elif served == ctx.served:
        outcome = {"unused": "accepted-unused"}.get(pred, "accepted-fully-served")
    else:
        outcome = "accepted-partial"
    if outcome == "rejected-at-open" and served:
        failures.append("modules served although the archive was refused")
    # Compare with the layout's prediction.
    if pred is not None and task.mode == "SHARE":
        want = {"open": "rejected-at-open", "span-load": "rejected-at-span-load",
                "unused": "accepted-unused", "unchanged": "accepted-fully-served"}[pred]
        if outcome != want:
            failures.append("expected %s, got %s" % (want, outcome))
        elif pred == "span-load":
            names = {n for s in spans for n in ctx.layout.span_roots.get(s, [])}
            if not any("module %s:" % n in warnings[0] for n in names):
                failures.append("warning names none of the damaged modules %s" % sorted(names))
    if task.mode == "AUTO":
        if warnings:
            failures.append("AUTO mode warned")
        if task.after and not failures:
            failures.extend(task.after(ctx, path))
    if task.documented:
        # A case the documentation declares unsupported: everything is only reported.
        notes, failures = failures, []
    elif task.informational:
        # Malicious (checksums recomputed): only crashes and hangs count; the trust model
        # makes no promise about the output of such files, so deviations are reported.
        notes = [f for f in failures if not f.startswith(("CRASH", "HANG"))]
        failures = [f for f in failures if f.startswith(("CRASH", "HANG"))]
        where = ctx.code_region(task.target)
        if where and failures and not res.timed_out:
            # CPython does not verify bytecode (nor does it for a .pyc): a changed opcode or
            # exception table of a file whose checksums were forged can crash it.
            notes += ["%s (the changed byte is in %s: not verified, as for a .pyc)" % (f, where)
                      for f in failures]
            failures = []
    for p in cleanup:
        try:
            if os.path.isdir(p) and not os.path.islink(p):
                os.chmod(p, 0o700)
                shutil.rmtree(p)
            else:
                os.unlink(p)
        except OSError:
            pass
    return {"category": task.category, "label": task.label, "outcome": outcome,
            "signature": signature(res) if (failures or notes) else None,
            "failures": failures, "notes": notes, "xfail": task.xfail,
            "informational": task.informational or task.documented,
            "seconds": time.monotonic() - t0,
            "warning": warnings[0] if warnings else None,
            "known_bug": known_bug(res, warnings) if (failures or notes) else None,
            "stderr_tail": res.err[-4000:] if (failures or notes) else None}


def known_bug(res, warnings):
    """The BUGS.md entry a failure is explained by, or ``None``."""
    span_failed = any(reason.startswith("archive error")
                      for _n, reason in R.pycds_lines(res.err).fallbacks)
    # BUG-H1: the warning for a damaged span imports pathlib in the middle of an import:
    # circular-import errors through _hook.get_code, or a hang, and no warning line.
    if span_failed and not warnings and (
            res.timed_out or ("in get_code" in res.err and "partially initialized" in res.err)):
        return "BUG-H1"
    return None


def signature(res):
    """A short description of how a failed child ended, to group failures."""
    if res.timed_out:
        return "hang"
    if res.rc is not None and res.rc < 0:
        return "signal %d" % -res.rc
    lines = [ln for ln in res.err.splitlines() if ln.strip() and not ln.startswith("pycds:")]
    return R.normalize_message(lines[-1].strip())[:160] if lines else "rc %s" % res.rc


def sweep_jobs(ctx, rng, quick):
    """In-process sweeps: ``[(name, items, expectation)]``."""
    lay = ctx.layout
    jobs = []
    lengths = list(range(0, 129)) + list(range(lay.tables_start, lay.file_len))
    lengths += list(range(129, lay.tables_start, 20011 if quick else 1009))
    lengths = sorted(set(lengths), reverse=True)
    jobs.append(("truncate (every length of header and tables, heap sampled)",
                 [["trunc", n] for n in lengths], "open"))
    bm_off, bm_len = lay.section("BITMAPS")
    open_bits = list(range(0, 128 * 8)) + [
        b for b in range(lay.tables_start * 8, lay.file_len * 8)
        if not bm_off * 8 <= b < (bm_off + bm_len) * 8]
    if quick:
        open_bits = list(range(0, 128 * 8)) + sorted(rng.sample(open_bits[1024:], 20000))
    for i in range(0, len(open_bits), 200000):
        jobs.append(("single-bit flips of header and tables except BITMAPS%s"
                     % ("" if quick else " (all)"),
                     [["flip", b] for b in open_bits[i:i + 200000]], "open"))
    # Flips accepted at open, refused when the owning span is loaded.
    n = 1000 if quick else 6000
    items = []
    for _ in range(n // 2):
        off = rng.randrange(bm_off, bm_off + bm_len)
        s = lay.bitmap_span_at(off)
        items.append(["flipload", off * 8 + rng.randrange(8), lay.span_roots.get(s, [])])
    heap_ranges = [(s["start"], s["start"] + s["len"]) for s in lay.spans if s["len"]]
    for _ in range(n // 2):
        off = pick_offset(rng, heap_ranges)
        items.append(["flipload", off * 8 + rng.randrange(8),
                      lay.span_roots.get(lay.span_at(off), [])])
    for i in range(0, len(items), 1000):
        jobs.append(("single-bit flips of BITMAPS and heap, owning span loaded",
                     items[i:i + 1000], "span"))
    return jobs


def run_sweep(ctx, name, items, expect, idx):
    base = os.path.join(ctx.work, "sweep%d" % idx)
    job = {"orig": ctx.archive, "path": base + ".img", "progress": base + ".progress",
           "result": base + ".json", "items": items}
    with open(base + ".job", "w") as f:
        json.dump(job, f)
    res = R.run([ctx.python, "-c", SWEEPER, base + ".job"], env=R.base_env(), cwd=ctx.work,
                timeout=1800)
    out = {"name": name, "items": len(items), "failures": [], "counts": {}, "examples": {}}
    crash = R.crash_reason(res)
    if crash or res.rc != 0:
        try:
            with open(base + ".progress") as f:
                last = f.read().strip()
        except OSError:
            last = "?"
        out["failures"].append("CRASH: %s (rc %s) at item %s: %s"
                               % (crash or "error", res.rc, last, res.err[-800:]))
        return out
    with open(base + ".json") as f:
        r = json.load(f)
    out["counts"], out["examples"], out["done"] = r["counts"], r["examples"], r["done"]
    for key, count in r["counts"].items():
        ok = key.startswith("rejected at open") if expect == "open" else \
            key.startswith("rejected at span load")
        if not ok:
            out["failures"].append("%d x %s (e.g. %s)" % (count, key, r["examples"][key][:2]))
    for suffix in (".img", ".progress", ".json", ".job"):
        try:
            os.unlink(base + suffix)
        except OSError:
            pass
    return out


def find_others(python):
    """Sibling venvs (``.../<x>/bin/python``) with pycds and another Python version."""
    mine = R.interpreter_version(python)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(python))))
    out = []
    for cand in sorted(glob.glob(os.path.join(root, "*", "bin", "python"))):
        if os.path.samefile(cand, python):
            continue
        v = R.interpreter_version(cand)
        # Only interpreters that can write archives (not a debug build, for example).
        if v and v != mine and R.run([cand, "-c", "import pycds; pycds.check_interpreter()"],
                                     timeout=60).rc == 0:
            out.append(cand)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", required=True, help="interpreter with pycds installed")
    ap.add_argument("--variants", type=int, default=None,
                    help="random child-process variants (default 3000, --quick 300)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="a CI-sized run (< 2 minutes)")
    ap.add_argument("--other-python", action="append", default=None)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--json", default=None, help="write every result to this file")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=None,
                    help="seconds before a child counts as hung (default 10, --quick 6; "
                         "a normal child takes well under 1 s)")
    args = ap.parse_args()
    n_random = args.variants if args.variants is not None else (300 if args.quick else 3000)
    rng = random.Random(args.seed)
    t_start = time.monotonic()
    work = tempfile.mkdtemp(prefix="pycds-hostile-", dir=args.workdir)
    ctx = Ctx(args, work)
    ctx.timeout = args.timeout or (6 if args.quick else 10)
    print("python: %s (%s)" % (args.python, R.interpreter_version(args.python)))
    print("work directory: %s" % work)

    # 1. Reference runs, archive.
    plain = [R.run([ctx.python, ctx.main], env=R.base_env(), cwd=work) for _ in range(2)]
    if plain[0].rc != 0 or plain[0].out != plain[1].out:
        sys.exit("the plain program fails or is not deterministic: %s" % plain[0].err[-2000:])
    ctx.plain = plain[0]
    R.trace_and_dump(ctx.python, [ctx.main], ctx.list, ctx.archive, cwd=work)
    clean = R.run([ctx.python, ctx.main], env=R.base_env(PYCDSMODE="SHARE",
                                                         PYCDSARCHIVE=ctx.archive,
                                                         PYCDSVERBOSE="2"), cwd=work)
    lines = R.pycds_lines(clean.err)
    if clean.out != ctx.plain.out or lines.warnings or not lines.served:
        sys.exit("the clean SHARE run is wrong: %s" % clean.err[-2000:])
    with open(ctx.archive, "rb") as f:
        ctx.orig = f.read()
    ctx.layout = R.Layout(ctx.orig)
    ctx.served = set(lines.served)
    # (C extensions are served from their metadata: their spans are never loaded)
    kinds = {r["name"]: r["kind"] for r in ctx.layout.roots}
    ctx.used_spans = {ctx.layout.root_span[n] for n in ctx.served if kinds.get(n) != "e"}
    # (with the spans they depend on: a module's kept span, loaded with its transient span)
    ctx.used_spans |= {d for s in ctx.used_spans for d in ctx.layout.spans[s]["deps"]}
    cm = R.run([ctx.python, "-c", BYTECODE_MAP, ctx.archive,
                json.dumps({r["name"]: r["object"] for r in ctx.layout.roots}),
                str(len(ctx.orig))], env=R.base_env(), cwd=work, timeout=300)
    if cm.rc != 0:
        sys.exit("cannot map the bytecode of the archive: %s" % cm.err[-2000:])
    ctx.code_ranges = json.loads(cm.out)
    print("archive: %d bytes, %d modules (%d spans), %d served to the program; heap %d bytes, "
          "tables %d bytes" % (len(ctx.orig), len(ctx.layout.roots), len(ctx.layout.spans),
                               len(ctx.served), ctx.layout.heap_len, ctx.layout.tables_len))

    others = args.other_python if args.other_python is not None else find_others(args.python)

    # 2. + 3. Build the task lists.
    jobs = sweep_jobs(ctx, rng, args.quick)
    tasks = truncation_tasks(ctx, rng, args.quick) + section_tasks(ctx, rng, args.quick)
    tasks += special_tasks(ctx, rng) + other_version_tasks(ctx, others) + in_use_tasks(ctx)
    tasks += auto_tasks(ctx, rng, args.quick) + permission_tasks(ctx)
    tasks += random_tasks(ctx, rng, n_random)
    print("in-process sweeps: %d variants in %d processes; child-process variants: %d"
          % (sum(len(j[1]) for j in jobs), len(jobs), len(tasks)))
    sys.stdout.flush()

    results, sweeps = [], []
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(args.workers, 2))) as pool:
        sweep_futs = [pool.submit(run_sweep, ctx, name, items, exp, i)
                      for i, (name, items, exp) in enumerate(jobs)]
        futs = [pool.submit(run_task, ctx, t) for t in tasks]
        for i, f in enumerate(futs, 1):
            results.append(f.result())
            if i % 500 == 0:
                print("  %d/%d child variants done (%.0f s)" % (i, len(futs),
                                                                time.monotonic() - t_start))
                sys.stdout.flush()
        sweeps = [f.result() for f in sweep_futs]
    elapsed = time.monotonic() - t_start
    status = report(ctx, sweeps, results, elapsed)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"python": args.python, "sweeps": sweeps, "results": results,
                       "seconds": elapsed}, f, indent=1)
    if not args.keep:
        for root, dirs, _files in os.walk(work):
            for d in dirs:
                try:
                    os.chmod(os.path.join(root, d), 0o700)
                except OSError:
                    pass
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(status)


OUTCOMES = ["rejected-at-open", "rejected-at-span-load", "accepted-unused",
            "accepted-fully-served", "accepted-partial", "auto-no-warning", "warned-other",
            "multiple-warnings"]


def report(ctx, sweeps, results, elapsed):
    print()
    print("## In-process sweeps (pycds.load / archive[name] in one interpreter)")
    print()
    rows = []
    sweep_fail = 0
    merged = {}
    for s in sweeps:
        m = merged.setdefault(s["name"], {"items": 0, "counts": {}, "failures": []})
        m["items"] += s["items"]
        for k, v in s["counts"].items():
            m["counts"][k] = m["counts"].get(k, 0) + v
        m["failures"].extend(s["failures"])
    for name, m in merged.items():
        top = sorted(m["counts"].items(), key=lambda kv: -kv[1])
        kinds = "; ".join("%d x %s" % (v, k[:70]) for k, v in top[:3])
        if len(top) > 3:
            kinds += "; ... (%d kinds)" % len(top)
        rows.append([name, m["items"], len(m["failures"]) and "FAIL" or "ok", kinds])
        sweep_fail += len(m["failures"])
    print(R.table(rows, ["sweep", "variants", "result", "outcomes (most frequent)"]))
    for name, m in merged.items():
        for f in m["failures"]:
            print("  FAIL %s: %s" % (name, f))

    print()
    print("## Child processes (SHARE/AUTO run of the program on each variant)")
    print()
    cats = []
    for r in results:
        if r["category"] not in cats:
            cats.append(r["category"])
    used = [o for o in OUTCOMES if any(r["outcome"] == o for r in results)]
    rows = []
    for c in cats:
        rs = [r for r in results if r["category"] == c]
        crashes = sum(1 for r in rs if any(f.startswith("CRASH") for f in r["failures"]))
        hangs = sum(1 for r in rs if any(f.startswith("HANG") for f in r["failures"]))
        fails = sum(1 for r in rs if r["failures"] and not r["xfail"])
        notes = sum(1 for r in rs if r["notes"])
        rows.append([c + (" (informational)" if rs[0]["informational"] else "")
                     + (" (expected to fail)" if rs[0]["xfail"] else ""), len(rs)]
                    + [sum(1 for r in rs if r["outcome"] == o) for o in used]
                    + [crashes, hangs, fails if not rs[0]["xfail"] else "-", notes])
    total = ["total", len(results)] + [sum(1 for r in results if r["outcome"] == o)
                                       for o in used]
    total += [sum(1 for r in results if any(f.startswith("CRASH") for f in r["failures"])),
              sum(1 for r in results if any(f.startswith("HANG") for f in r["failures"])),
              sum(1 for r in results if r["failures"] and not r["xfail"]),
              sum(1 for r in results if r["notes"])]
    rows.append(total)
    print(R.table(rows, ["category", "variants"] + used + ["crashes", "hangs", "failures",
                                                          "notes"]))
    failed = [r for r in results if r["failures"] and not r["xfail"]]
    if failed:
        print()
        print("### Failures by how the child ended (%d)" % len(failed))
        groups = {}
        for r in failed:
            groups.setdefault(r["signature"], []).append(r)
        bugs = {}
        for r in failed:
            bugs[r.get("known_bug") or "not explained by a known bug"] = \
                bugs.get(r.get("known_bug") or "not explained by a known bug", 0) + 1
        print("explained by: " + ", ".join("%s: %d" % kv for kv in sorted(bugs.items())))
        print()
        for sig, rs in sorted(groups.items(), key=lambda kv: -len(kv[1])):
            print("- %d x %s (categories: %s)" % (len(rs), sig, ", ".join(
                sorted({r["category"] for r in rs}))))
        print()
        print("### Failures (%d; first 30)" % len(failed))
        for r in failed[:30]:
            print("- %s %s: %s | warning: %s | stderr: %r"
                  % (r["category"], r["label"], "; ".join(r["failures"]), r["warning"],
                     (r["stderr_tail"] or "")[-300:]))
    noted = [r for r in results if r["notes"]]
    if noted:
        print()
        print("### Informational cases whose output or warnings deviate (%d; first 15)"
              % len(noted))
        kinds = {}
        for r in noted:
            for n in r["notes"]:
                kinds[n] = kinds.get(n, 0) + 1
        bugs = {}
        for r in noted:
            key = r.get("known_bug") or "not explained by a known bug"
            bugs[key] = bugs.get(key, 0) + 1
        print("explained by: " + ", ".join("%s: %d" % kv for kv in sorted(bugs.items())))
        for k, v in sorted(kinds.items(), key=lambda kv: -kv[1]):
            print("- %d x %s" % (v, k))
        for r in noted[:15]:
            print("  - %s %s: %s | %s" % (r["category"], r["label"], "; ".join(r["notes"]),
                                          r["warning"]))
    print()
    print("### Special files and foreign archives")
    for r in results:
        if r["category"] in ("special", "other-version") or r["category"].startswith("in-use"):
            print("- %s%s: %s%s" % (r["label"], " [%s]" % r["category"]
                                    if r["category"] != "special" else "", r["outcome"],
                                    " -- " + r["warning"] if r["warning"] else ""))
            for f in r["failures"] + r["notes"]:
                print("    %s: %s" % ("NOTE" if r["informational"] else "FAIL", f))
    print()
    if any(r["xfail"] for r in results):
        print("### Expected failures")
    for r in results:
        if r["xfail"]:
            print("- %s: %s (%s)%s" % (r["label"], "XPASS" if not r["failures"] else "XFAIL",
                                       r["outcome"], "" if not r["failures"]
                                       else " -- " + "; ".join(r["failures"])))
    n_fail = len(failed) + sweep_fail
    print()
    print("wall time %.0f s; %d child variants + %d in-process variants; %d failures"
          % (elapsed, len(results), sum(s["items"] for s in sweeps), n_fail))
    return 1 if n_fail else 0


if __name__ == "__main__":
    main()
