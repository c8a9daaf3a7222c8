"""Where the PSS difference between plain CPython and pycds SHARE comes from.

    python3 benches/startup/pss_breakdown.py [--versions 3.12] [--workloads W1 W2 W3]
                                             [--procs 8] [--workdir /tmp/pycds-matrix]

Uses the environments of ``matrix.py`` (same ``--workdir``; made on first use) and records and
dumps each workload's archive as it does. Then, per workload:

* starts ``--procs`` plain and ``--procs`` SHARE processes of the workload at once (each waits
  after the workload) and sums the PSS of every mapping of ``/proc/PID/smaps`` by class:
  anonymous memory (``[heap]``, pymalloc arenas, stacks, and with pycds the archive's
  mapping: span heap and the tables read at open), the ``_pycds`` extension, other files;
* takes the size of the tables the Read strategy keeps in memory after open (every section
  but BITMAPS, less the whole pages of the extern names it leaves in the file; from the
  archive's section, extern and root tables);
* estimates what a normal import frees once a module body has run (module and class-body
  code objects with their bytecode, line and exception tables, and their ``co_consts``,
  ``co_names`` and ``co_varnames`` tuples; sizes from ``sys.getsizeof`` in a plain process
  that compiled each imported module's source; each object counted once), and reports what
  pycds gave back of the same (its transient spans released after the bodies ran, and the
  bodies it kept because something held them: ``pycds.stats()`` of one SHARE run).

Prints a markdown table of per-process averages (KiB). Linux only.
"""

import argparse
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "spec", "reader"))
import arena_reader  # noqa: E402  (the archive format's independent reader)
import matrix  # noqa: E402  (the environments and archives of the start-up matrix)

_MAP = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \S+\s*(.*)$")

# In a plain process after the workload: bytes of the objects a normal import has freed.
_TRANSIENT = r"""
import sys, types
seen = {}    # id -> object: keeps every object sized alive, so no id is reused
def size(o):
    if o is None or id(o) in seen:
        return 0
    seen[id(o)] = o
    return sys.getsizeof(o)
by_kind = {True: 0, False: 0}   # module bodies, class bodies
def walk(co, top):
    if not top and co.co_flags & 0x2:   # CO_NEWLOCALS: a function body, kept by its function
        return
    by_kind[top] += sum(size(o) for o in (co, co.co_linetable, co.co_exceptiontable or None,
                                          co.co_consts, co.co_names, co.co_varnames))
    for c in co.co_consts:
        if isinstance(c, types.CodeType):
            walk(c, False)
mods = 0
for m in list(sys.modules.values()):
    spec = getattr(m, "__spec__", None)
    origin = getattr(spec, "origin", None)
    if not origin or not origin.endswith(".py"):
        continue
    with open(origin, "rb") as f:
        walk(compile(f.read(), origin, "exec"), True)
    mods += 1
print(mods, by_kind[True], by_kind[False])
"""


# In a SHARE process after the workload: bodies given back and kept, bytes given back.
_RELEASED = r"""
import pycds as _p
_s = _p.stats()["load"]
print(_s["released"], _s["kept"], _s["released_bytes"])
"""


def tables_kept(img, page=4096):
    """Bytes of the tables the Read strategy keeps in memory after open: every section but
    BITMAPS, less the whole pages of the EXTERNS section (each entry is kept in its extern's
    cell until resolved) and of the range of STRINGS holding the extern names, which it
    leaves in the file when that range spans two pages or more and holds no root name (read
    with the project's independent reader, ``spec/reader/arena_reader.py``)."""
    with open(img, "rb") as f:
        arena = arena_reader.Arena(f.read())
    bitmaps = arena.by_kind.get(arena_reader.BITMAPS)
    read = arena.header.tables_len - (bitmaps.length if bitmaps else 0)

    def whole_pages(start, end):
        return max(0, end // page * page - -(-start // page) * page)

    externs = arena.by_kind.get(arena_reader.EXTERNS)
    if arena.externs and externs is not None:
        read -= whole_pages(externs.offset, externs.offset + externs.length)
    strings = arena.by_kind.get(arena_reader.STRINGS)
    if not arena.externs or strings is None:
        return read
    lo = min(e.name_off for e in arena.externs)
    hi = max(e.name_off + e.name_len for e in arena.externs)
    if hi - lo < 2 * page or any(r.name_off < hi and r.name_off + r.name_len > lo
                                 for r in arena.roots):
        return read
    return read - whole_pages(strings.offset + lo, strings.offset + hi)


def classify(pid):
    """PSS KiB of process ``pid`` by mapping class."""
    out = {"anon": 0, "_pycds": 0, "files": 0}
    cls = None
    with open("/proc/%d/smaps" % pid) as f:
        for line in f:
            m = _MAP.match(line)
            if m:
                name = m.group(3).strip()
                if not name or name.startswith("["):
                    cls = "anon"
                elif "_pycds" in os.path.basename(name):
                    cls = "_pycds"
                else:
                    cls = "files"
            elif line.startswith("Pss:"):
                out[cls] += int(line.split()[1])
    return out


def run_procs(argv, env, procs):
    """Per-process average PSS KiB by mapping class of ``procs`` concurrent processes."""
    per = matrix.concurrent(argv, env, procs, classify)
    return {k: sum(c[k] for c in per) / procs for k in per[0]}


def measure(args, version, req):
    base = matrix.venv(args.workdir, version, "base", req)
    pyc = matrix.venv(args.workdir, version, "pycds", req)
    d = os.path.join(args.workdir, "run-" + version)
    os.makedirs(d, exist_ok=True)
    rows = []
    for wl in args.workloads:
        code, flags = matrix.workload(args.workloads_dir, wl)
        if flags:
            continue
        img, _dump = matrix.pycds_archive(pyc, code, flags, d, wl)
        plain = run_procs([base, "-c", code], matrix.clean_env(), args.procs)
        share = run_procs([pyc, "-c", code],
                          matrix.clean_env(PYCDSMODE="SHARE", PYCDSARCHIVE=img), args.procs)
        out = matrix.sh([base, "-c", code + "\n" + _TRANSIENT], env=matrix.clean_env()).stdout
        mods, module_bodies, class_bodies = map(int, out.split()[-3:])
        out = matrix.sh([pyc, "-c", code + "\n" + _RELEASED],
                        env=matrix.clean_env(PYCDSMODE="SHARE", PYCDSARCHIVE=img)).stdout
        released, kept, given = map(int, out.split()[-3:])
        rows.append((wl, plain, share, tables_kept(img) / 1024, mods,
                     module_bodies / 1024, class_bodies / 1024, released, kept, given / 1024))
        matrix.log("%s %s done" % (version, wl))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    matrix.add_matrix_args(ap, ["3.12"], ["W1", "W2", "W3"])
    ap.add_argument("--procs", type=int, default=8)
    args = ap.parse_args()
    req = matrix.requirements(args)
    print("Per-process averages of %d concurrent processes, KiB. *anon*: all anonymous memory "
          "(with pycds including the archive's mapping); *bodies in a plain import*: what a "
          "normal import frees once each module body has run (module and class-body code "
          "objects with their bytecode, line tables and tuples), estimated in a plain process; "
          "*given back*: pycds's transient spans released after the bodies ran (modules; bodies "
          "kept because something held them) and the memory returned; *tables*: the archive "
          "tables kept in memory after open; *rest*: the difference minus tables and the "
          "`_pycds` extension.\n" % args.procs)
    print("| version | workload | PSS plain | PSS pycds | difference | anon plain / pycds "
          "| bodies in a plain import: module + class (modules) | given back: modules (kept), KiB "
          "| tables | `_pycds` | rest |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for version in args.versions:
        for (wl, plain, share, tables, mods, mod_b, cls_b, released, kept,
             given) in measure(args, version, req):
            tp, ts = sum(plain.values()), sum(share.values())
            diff = ts - tp
            print("| %s | %s | %.0f | %.0f | %+.0f | %.0f / %.0f | %.0f = %.0f + %.0f (%d) "
                  "| %d (%d), %.0f | %.0f | %.0f | %+.0f |" % (
                      version, wl, tp, ts, diff, plain["anon"], share["anon"],
                      mod_b + cls_b, mod_b, cls_b, mods, released, kept, given, tables,
                      share["_pycds"], diff - tables - share["_pycds"]))
            sys.stdout.flush()


if __name__ == "__main__":
    main()
