"""Shared helpers of the pycds reliability scripts in ``compat/``.

Used by ``hostile.py``, ``staleness.py``, ``concurrency.py`` and ``environments.py``; not a
test by itself (``python3 compat/robustlib.py ARCHIVE`` prints an archive's layout, which
is handy when reading a failure report).

What is here:

* ``write_app``: a small but real test program (a dozen stdlib modules, a module and a
  package of its own) whose stdout is deterministic and exercises the imported code;
* ``run``: one child process with a timeout, and the crash / pycds-stderr oracles;
* ``trace_and_dump``: the TRACE then DUMP steps of the environment-variable workflow;
* ``Layout``: a reader of the arena format (``spec/format.md``) that maps every byte of an
  archive to the structure it belongs to, and ``fix_crcs``, which recomputes every
  checksum of a modified archive (to build "malicious" files that pass the CRC checks).

Standard library only; runs with any Python 3.8+ (the interpreter under test is always
a separate process given by ``--python``).
"""

import bisect
import collections
import os
import re
import struct
import subprocess
import sys
import time
import zlib

# -- the test program -------------------------------------------------------------------

HELPERS_PY = '''\
"""Helpers of the pycds compat test program."""
import decimal
import fractions
import statistics

MARK = "helpers-v1"


def money(values):
    """Sum decimal strings exactly, rounded half-even to cents."""
    total = sum((decimal.Decimal(v) for v in values), decimal.Decimal(0))
    return total.quantize(decimal.Decimal("0.01"), rounding=decimal.ROUND_HALF_EVEN)


def ratios(pairs):
    return [str(fractions.Fraction(a, b)) for a, b in pairs]


def spread(values):
    return (statistics.mean(values), statistics.median(values), round(statistics.pstdev(values), 6))


def fail(key):
    table = {"alpha": 1, "beta": 2}
    return table["gamma" + key] * 2
'''

MYLIB_INIT_PY = '''\
"""A package of the pycds compat test program."""
from .report import Item, Level, Report

VERSION = "mylib-1.0"
__all__ = ("Item", "Level", "Report", "VERSION")
'''

MYLIB_REPORT_PY = '''\
"""Rendering of the compat test program's report."""
import dataclasses
import enum
import json
import string
import textwrap


class Level(enum.Enum):
    LOW = 1
    HIGH = 2


@dataclasses.dataclass(frozen=True)
class Item:
    name: str
    qty: int
    price: str
    level: Level = Level.LOW


class Report:
    TEMPLATE = string.Template("$title: $count items, levels $levels")

    def __init__(self, title, items):
        self.title = title
        self.items = list(items)

    def header(self):
        levels = ",".join(sorted({i.level.name for i in self.items}))
        return self.TEMPLATE.substitute(title=self.title, count=len(self.items), levels=levels)

    def as_json(self):
        rows = [dict(dataclasses.asdict(i), level=i.level.name) for i in self.items]
        return json.dumps(rows, sort_keys=True)

    def wrapped(self, width=40):
        words = " ".join("%s*%d" % (i.name, i.qty) for i in self.items)
        return textwrap.fill(words, width=width)
'''

MAIN_PY = '''\
"""The pycds compat test program: deterministic output from many stdlib modules."""
import argparse
import base64
import calendar
import collections
import csv
import datetime
import difflib
import email.message
import hashlib
import heapq
import html
import io
import ipaddress
import json
import pprint
import shlex
import sys
import traceback
import types
import urllib.parse

import helpers
import mylib
from mylib import report


def where(mod):
    """The module's file, spec origin and the file names of its functions' code."""
    names = set()
    for value in vars(mod).values():
        if isinstance(value, types.FunctionType) and value.__module__ == mod.__name__:
            names.add(value.__code__.co_filename)
        elif isinstance(value, type) and value.__module__ == mod.__name__:
            for member in vars(value).values():
                if isinstance(member, types.FunctionType):
                    names.add(member.__code__.co_filename)
    return "%s file=%s origin=%s code=%s" % (mod.__name__, mod.__file__, mod.__spec__.origin,
                                             sorted(names))


def main(argv):
    parser = argparse.ArgumentParser(prog="app", description="compat test program")
    parser.add_argument("--count", type=int, default=3)
    parser.add_argument("--name", default="world")
    parser.add_argument("-v", "--verbose", action="store_true")
    ns = parser.parse_args(argv)
    print("args", ns.count, ns.name, ns.verbose)
    print("mark", helpers.MARK, mylib.VERSION)
    print("money", helpers.money(["1.105", "2.205", "0.1"] * ns.count))
    print("ratios", helpers.ratios([(1, 3), (6, 4), (10, 5)]))
    print("spread", helpers.spread([2, 4, 4, 4, 5, 5, 7, 9]))
    items = [report.Item("apple", 3, "0.50"), report.Item("pear", 1, "0.75", report.Level.HIGH),
             report.Item("fig", 12, "0.20")]
    rep = mylib.Report("fruit", items)
    print(rep.header())
    print(rep.as_json())
    print(rep.wrapped(24))
    msg = email.message.EmailMessage()
    msg["From"] = "a@example.org"
    msg["To"] = "b@example.org"
    msg["Subject"] = "hello %s" % ns.name
    msg.set_content("line one\\nline two\\n")
    print(msg.as_string().replace("\\r\\n", "\\n").strip())
    print("b64", base64.b64encode(b"pycds compat").decode())
    print("sha", hashlib.sha256(b"pycds").hexdigest()[:16])
    print("url", urllib.parse.urlencode({"q": "a b", "n": 3}),
          urllib.parse.urlsplit("https://example.org/x?y=1#z").netloc)
    print("ip", ipaddress.ip_network("10.0.0.0/29").num_addresses,
          ipaddress.ip_address("192.168.1.7").is_private)
    print("shlex", shlex.split("a 'b c' d\\\\ e"), shlex.join(["x y", "z"]))
    print("html", html.escape("<a href='x'>&</a>"))
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["n", "sq"])
    for i in range(ns.count):
        w.writerow([i, i * i])
    print(out.getvalue().strip().replace("\\r\\n", "|"))
    print("heap", heapq.nsmallest(3, [9, 1, 8, 2, 7, 3]))
    print("counter", collections.Counter("abracadabra").most_common(3))
    print("diff", list(difflib.unified_diff(["a", "b", "c"], ["a", "c", "d"], lineterm="")))
    print("date", datetime.date(2024, 2, 29) + datetime.timedelta(days=1),
          calendar.isleap(2100), calendar.monthrange(2024, 2))
    pprint.pprint({"z": list(range(12)), "a": {"nested": ("t", 1.5)}}, width=40)
    try:
        helpers.fail("x")
    except KeyError:
        # File names, line numbers and (3.11+) the ^^^^ position markers of every frame.
        print(traceback.format_exc().strip())
    for mod in (helpers, mylib, report, json, argparse, email.message):
        print(where(mod))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
'''

APP_FILES = {
    "main.py": MAIN_PY,
    "helpers.py": HELPERS_PY,
    "mylib/__init__.py": MYLIB_INIT_PY,
    "mylib/report.py": MYLIB_REPORT_PY,
}


def write_app(root):
    """Write the test program under ``root``; returns the path of its ``main.py``."""
    for rel, text in APP_FILES.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    return os.path.join(root, "main.py")


# ``use(name)``: import a module and exercise it, so that wrong code would show in the output
# (source text, pasted into the programs of concurrency.py and environments.py).
PROBES = '''
def use(name):
    import importlib
    m = importlib.import_module(name)
    probes = {
        "json": lambda: m.dumps({"b": [1, 2], "a": None}, sort_keys=True),
        "csv": lambda: m.list_dialects() and "dialects",
        "difflib": lambda: "".join(m.ndiff(["a\\n"], ["b\\n"])),
        "fractions": lambda: str(m.Fraction(3, 12)),
        "statistics": lambda: str(m.median([3, 1, 2])),
        "numbers": lambda: str(issubclass(int, m.Integral)),
        "email.message": lambda: m.EmailMessage().get_content_type(),
        "email.utils": lambda: m.formataddr(("A B", "a@b.c")),
        "email.parser": lambda: m.Parser().parsestr("Subject: x\\n\\nbody")["Subject"],
        "argparse": lambda: str(vars(m.ArgumentParser(prog="p").parse_args([]))),
        "gettext": lambda: m.gettext("hello"),
        "shlex": lambda: m.quote("a b"),
        "ipaddress": lambda: str(m.ip_address("10.1.2.3").is_private),
        "urllib.parse": lambda: m.quote("a b/c"),
        "html": lambda: m.escape("<&>"),
        # (``typing`` first: dataclasses peeks at ``sys.modules['typing']``, which another
        # thread may be importing; plain CPython then fails with "partially initialized
        # module 'typing'" too, 4 runs in 450 of the threads program under load. Importing it
        # waits for that thread's import to finish.)
        "dataclasses": lambda: (importlib.import_module("typing"),
                                str(m.fields(m.make_dataclass("P", ["x", "y"]))[1].name))[1],
        "pprint": lambda: m.pformat({"k": list(range(3))}),
        "textwrap": lambda: m.shorten("hello brave new world", 12),
        "calendar": lambda: str(m.isleap(2024)),
        "string": lambda: m.capwords("hello world"),
        "base64": lambda: m.b64encode(b"xyz").decode(),
        "tomllib": lambda: str(m.loads("a = 1")),
        "zipfile": lambda: str(m.is_zipfile(m.__file__)),
        "tarfile": lambda: str(m.is_tarfile(m.__file__)),
    }
    return "%s=%s" % (name, probes.get(name, lambda: "?")())
'''

PROBED_MODULES = ["json", "csv", "difflib", "fractions", "statistics", "numbers", "email.message",
                  "email.utils", "email.parser", "argparse", "gettext", "shlex", "ipaddress",
                  "urllib.parse", "html", "dataclasses", "pprint", "textwrap", "calendar",
                  "string", "base64", "tomllib", "zipfile", "tarfile"]


# -- child processes --------------------------------------------------------------------

_SCRUB = ("PYCDSMODE", "PYCDSLIST", "PYCDSARCHIVE", "PYCDSVERBOSE", "PYCDS_LOAD",
          "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONSAFEPATH", "PYTHONNODEBUGRANGES",
          "PYTHONOPTIMIZE", "PYTHONDONTWRITEBYTECODE", "PYTHONINSPECT", "PYTHONWARNINGS",
          "PYTHONDEVMODE", "PYTHONPYCACHEPREFIX", "VIRTUAL_ENV", "__PYVENV_LAUNCHER__")


def base_env(**extra):
    """The environment of a child: this one without PYCDS*/PYTHON* settings that would
    change the child's behaviour, plus ``extra`` (``None`` values are dropped)."""
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    env["PYTHONHASHSEED"] = "0"
    env["PYTHONIOENCODING"] = "utf-8"
    for k, v in extra.items():
        if v is not None:
            env[k] = str(v)
    return env


Result = collections.namedtuple("Result", "rc out err timed_out seconds")


def run(cmd, env=None, cwd=None, timeout=60, stdin_data=None):
    """Run ``cmd``; never raises for the child's behaviour. ``rc`` is negative for a
    signal, ``None`` on a timeout (the child is killed)."""
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, env=env, cwd=cwd, timeout=timeout,
                           input=stdin_data if stdin_data is not None else b"",
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        return Result(p.returncode, p.stdout.decode("utf-8", "replace"),
                      p.stderr.decode("utf-8", "replace"), False, time.monotonic() - t0)
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode("utf-8", "replace")
        err = (exc.stderr or b"").decode("utf-8", "replace")
        return Result(None, out, err, True, time.monotonic() - t0)


CRASH_MARKERS = ("Fatal Python error", "Segmentation fault", "core dumped", "Aborted",
                 "panicked at", "SystemError", "Bus error")


def crash_reason(res):
    """Why ``res`` counts as a crash or a hang, or ``None``."""
    if res.timed_out:
        return "hang (timeout after %.0f s)" % res.seconds
    if res.rc is not None and res.rc < 0:
        return "killed by signal %d" % -res.rc
    for marker in CRASH_MARKERS:
        if marker in res.err:
            return "stderr contains %r" % marker
    return None


PycdsLines = collections.namedtuple("PycdsLines", "warnings served fallbacks other")


def pycds_lines(err):
    """The pycds lines of a child's stderr (``PYCDSVERBOSE=2``)."""
    warnings, served, fallbacks, other = [], [], [], []
    for line in err.splitlines():
        if line.startswith("pycds: warning:"):
            warnings.append(line)
        elif line.startswith("pycds: served "):
            served.append(line[len("pycds: served "):].strip())
        elif line.startswith("pycds: fallback "):
            name, _, reason = line[len("pycds: fallback "):].partition(": ")
            fallbacks.append((name, reason))
        elif line.startswith("pycds:"):
            other.append(line)
    return PycdsLines(warnings, served, fallbacks, other)


def trace_and_dump(python, args, list_path, archive_path, cwd=None, env_extra=None,
                   timeout=120):
    """``PYCDSMODE=TRACE`` then ``PYCDSMODE=DUMP`` (same ``args`` so that ``sys.path[0]``
    is the same); raises ``RuntimeError`` with the child's stderr on failure."""
    extra = dict(env_extra or {})
    r = run([python] + list(args), env=base_env(PYCDSMODE="TRACE", PYCDSLIST=list_path, **extra),
            cwd=cwd, timeout=timeout)
    if r.rc != 0 or not os.path.exists(list_path):
        raise RuntimeError("TRACE failed (rc=%s): %s" % (r.rc, r.err[-2000:]))
    # DUMP runs the same command line: the dump happens at start-up, then the program runs.
    r = run([python] + list(args), env=base_env(PYCDSMODE="DUMP", PYCDSLIST=list_path,
                                               PYCDSARCHIVE=archive_path, **extra),
            cwd=cwd, timeout=timeout)
    if r.rc != 0 or not os.path.exists(archive_path) or "pycds: warning" in r.err:
        raise RuntimeError("DUMP failed (rc=%s): %s" % (r.rc, r.err[-2000:]))
    return r


def interpreter_version(python):
    r = run([python, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"], timeout=60)
    return r.out.strip() if r.rc == 0 else None


# -- the arena format (spec/format.md) --------------------------------------------------

HEADER = struct.Struct("<8sHHIQII32sQQQQQQIII4s")
SECTION = struct.Struct("<IIQQ")
SPAN = struct.Struct("<QQQQIIIIII")
ROOT = struct.Struct("<IIQIIII")
MAGIC = b"\x89ARENA\r\n"
KINDS = {1: "STRINGS", 2: "EXTERNS", 3: "SPANS", 4: "DEPS", 5: "ROOTS", 6: "BITMAPS",
         7: "META", 8: "PRODUCER", 9: "ARCHIVE_META"}
KIND_IDS = {v: k for k, v in KINDS.items()}


def align8(x):
    return (x + 7) & ~7


class Layout:
    """The structure of a *valid* archive: where the header, section table, sections,
    padding, spans (heap bytes and bitmaps) and roots are."""

    def __init__(self, data):
        data = bytes(data)
        if len(data) < 128 or data[:8] != MAGIC:
            raise ValueError("not an arena file")
        h = HEADER.unpack_from(data, 0)
        self.file_len = h[4]
        self.heap_start, self.heap_len = h[9], h[10]
        self.tables_start, self.tables_len = h[11], h[12]
        self.section_table_offset, self.section_count = h[13], h[14]
        self.sections = {}  # kind -> (index, crc, offset, len)
        for i in range(self.section_count):
            kind, crc, off, ln = SECTION.unpack_from(data, self.section_table_offset + 24 * i)
            self.sections[kind] = (i, crc, off, ln)
        self.section_table_end = self.section_table_offset + 24 * self.section_count
        so, sl = self.section("SPANS")
        deps_off = self.section("DEPS")[0]
        self.spans = []
        for i in range(sl // SPAN.size):
            (start, ln, boff, blen, doff, dcnt, moff, mlen, crc, _r) = SPAN.unpack_from(
                data, so + SPAN.size * i)
            deps = struct.unpack_from("<%dI" % dcnt, data, deps_off + 4 * doff) if dcnt else ()
            self.spans.append({"start": start, "len": ln, "bitmap_off": boff,
                               "bitmap_len": blen, "deps": deps, "meta_off": moff,
                               "meta_len": mlen, "crc": crc})
        self._span_starts = [s["start"] for s in self.spans]
        self._bitmap_starts = [s["bitmap_off"] for s in self.spans]
        ro, rl = self.section("ROOTS")
        stro = self.section("STRINGS")[0]
        meta_at = self.section("META")[0]
        self.roots = []
        self.span_roots = collections.defaultdict(list)
        for i in range(rl // ROOT.size):
            noff, nlen, obj, span, mo, ml, _r = ROOT.unpack_from(data, ro + ROOT.size * i)
            name = data[stro + noff:stro + noff + nlen].decode("utf-8", "replace")
            # The import hook's module metadata (after the profile's one-byte root kind:
            # `PYM2\0<kind>\0...`): `e` for a C extension, whose span the loader never loads
            # (only the metadata is used).
            meta = data[meta_at + mo + 1:meta_at + mo + ml].split(b"\0")
            kind = meta[1].decode("ascii", "replace") if meta[0] == b"PYM2" and len(meta) > 1 else None
            self.roots.append({"name": name, "object": obj, "span": span, "kind": kind})
            self.span_roots[span].append(name)
        self.root_span = {r["name"]: r["span"] for r in self.roots}
        # A span without roots that a root's span depends on (the import hook's kept span of
        # a module, whose transient span holds the module's root) belongs to those modules.
        for s, names in list(self.span_roots.items()):
            for d in self.spans[s]["deps"] if s < len(self.spans) else ():
                if d < len(self.spans) and not any(r["span"] == d for r in self.roots):
                    self.span_roots[d].extend(n for n in names if n not in self.span_roots[d])

    def section(self, name):
        _i, _crc, off, ln = self.sections[KIND_IDS[name]]
        return off, ln

    def regions(self):
        """``[(name, start, end)]`` covering the file: header, section table, each
        section, padding runs, and the heap (one region)."""
        out = [("header", 0, 128), ("heap", self.heap_start, self.heap_start + self.heap_len),
               ("section-table", self.section_table_offset, self.section_table_end)]
        cursor = self.section_table_end
        for kind in sorted(self.sections):
            _i, _crc, off, ln = self.sections[kind]
            if off > cursor:
                out.append(("padding", cursor, off))
            out.append((KINDS.get(kind, "kind%d" % kind), off, off + ln))
            cursor = off + ln
        if self.file_len > cursor:
            out.append(("padding", cursor, self.file_len))
        return sorted(out, key=lambda r: r[1])

    def span_at(self, off):
        """The span whose heap bytes contain ``off`` (``None`` outside the heap)."""
        if not self.heap_start <= off < self.heap_start + self.heap_len:
            return None
        i = bisect.bisect_right(self._span_starts, off) - 1
        return i if i >= 0 else None

    def bitmap_span_at(self, off):
        """The span whose bitmaps contain BITMAPS byte ``off`` (file offset), or ``None``."""
        boff, blen = self.section("BITMAPS")
        if not boff <= off < boff + blen:
            return None
        rel = off - boff
        # Zero-length spans share their bitmap offset with the next span: the last span
        # starting at or before ``rel`` owns the byte.
        i = bisect.bisect_right(self._bitmap_starts, rel) - 1
        return i if i >= 0 else None

    def classify(self, off):
        """``('span', i)`` for a byte checked only when span ``i`` is loaded (its heap bytes
        and its bitmaps), ``('open', region)`` for a byte checked when the file is opened."""
        s = self.span_at(off)
        if s is not None:
            return ("span", s)
        s = self.bitmap_span_at(off)
        if s is not None:
            return ("span", s)
        for name, a, b in self.regions():
            if a <= off < b:
                return ("open", name)
        return ("open", "beyond-end")


def changed_offsets(orig, new):
    """Offsets where two equally long byte strings differ (fast on mostly equal data)."""
    out = []
    step = 4096
    for a in range(0, len(orig), step):
        if orig[a:a + step] != new[a:a + step]:
            for i in range(a, min(a + step, len(orig))):
                if orig[i] != new[i]:
                    out.append(i)
    return out


def fix_crcs(buf):
    """Recompute, in place, every checksum of a (modified) archive from its own tables,
    as a malicious writer would: span CRCs, section CRCs, the section-table CRC and the
    header CRC. Fields that point outside the file are left alone."""
    n = len(buf)
    if n < 128:
        return buf
    h = HEADER.unpack_from(buf, 0)
    sto, count = h[13], h[14]
    entries = {}
    if count < 1000 and sto + 24 * count <= n:
        for i in range(count):
            kind, _crc, off, ln = SECTION.unpack_from(buf, sto + 24 * i)
            entries[kind] = (i, off, ln)
    # Span CRCs first (they live in SPANS, whose section CRC follows).
    if all(k in entries for k in (3, 6, 7)):
        _i, so, sl = entries[3]
        _i, bo, bl = entries[6]
        _i, mo, ml = entries[7]
        if so + sl <= n and bo + bl <= n and mo + ml <= n:
            for j in range(sl // SPAN.size):
                e = so + SPAN.size * j
                start, ln, boff, blen, _do, _dc, moff, mlen, _crc, _r = SPAN.unpack_from(buf, e)
                parts = [(start, ln), (bo + boff, blen), (bo + boff + blen, blen), (mo + moff, mlen)]
                if all(a + b <= n for a, b in parts):
                    crc = 0
                    for a, b in parts:
                        crc = zlib.crc32(bytes(buf[a:a + b]), crc)
                    struct.pack_into("<I", buf, e + 48, crc)
    for kind, (i, off, ln) in entries.items():
        if off + ln <= n:
            struct.pack_into("<I", buf, sto + 24 * i + 4, zlib.crc32(bytes(buf[off:off + ln])))
    if count < 1000 and sto + 24 * count <= n:
        struct.pack_into("<I", buf, 116, zlib.crc32(bytes(buf[sto:sto + 24 * count])))
    struct.pack_into("<I", buf, 120, 0)
    struct.pack_into("<I", buf, 120, zlib.crc32(bytes(buf[:128])))
    return buf


# -- reporting ---------------------------------------------------------------------------

def table(rows, headers):
    """A Markdown table (also readable on a terminal)."""
    rows = [[str(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
    out = [line(headers), "| " + " | ".join("-" * w for w in widths) + " |"]
    out.extend(line(r) for r in rows)
    return "\n".join(out)


def normalize_message(text):
    """An error message with numbers, hex values and paths replaced, for counting kinds."""
    text = re.sub(r"0x[0-9a-fA-F]+", "X", text)
    text = re.sub(r"\d+", "N", text)
    text = re.sub(r"(/[^\s:;()'\"]+)+", "PATH", text)
    return text


if __name__ == "__main__":
    with open(sys.argv[1], "rb") as f:
        lay = Layout(f.read())
    for name, a, b in lay.regions():
        print("%-14s %10d %10d %8d bytes" % (name, a, b, b - a))
    for i, s in enumerate(lay.spans):
        print("span %3d start %9d len %8d roots %s" % (i, s["start"], s["len"],
                                                      ",".join(lay.span_roots.get(i, []))))
