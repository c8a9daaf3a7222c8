"""Where a SHARE start-up spends its time, sampled with ``perf``; the floor it implies.

    python3 benches/startup/where_time_goes.py [--versions 3.12 3.11 3.13]
        [--workloads W1 W2 W3] [-n 21] [--runs 20] [--workdir /tmp/pycds-matrix]

For each version and workload: plain CPython and pycds SHARE are timed alternating (``-n``
pairs, as ``matrix.py`` does: median wall time and median per-pair ratio), then each is run
``--runs`` times under ``perf record -e cpu-clock -g`` (user and kernel samples of the whole
process). From the samples of the SHARE process it reports the share of time spent

* in pycds's native extension (``_pycds*.so``, self time: checksums, slot checks,
  relocation, fix-ups, extern resolution, ``find_spec``, the archive open),
* in the kernel giving the loaded spans their memory (the ``madvise(MADV_POPULATE_WRITE)``
  and ``pread64`` system calls, inclusive),
* in the cyclic garbage collector (``gc_collect_main``, ``visit_decref``,
  ``visit_reachable``; in plain CPython too, for comparison, in milliseconds),

and the ratio SHARE would reach if the extension's own code cost nothing: the measured
ratio times (1 - its share). That is the floor for any faster implementation of the same
loader: what is left is the interpreter running module bodies, loading C extensions, the
kernel starting and ending the process, and memory for the objects (which a normal import
allocates too). Uses the environments and archives of ``matrix.py`` (same ``--workdir``).
Needs ``perf`` (Linux; ``kernel.perf_event_paranoid`` <= 2 samples the process's own user
and kernel time). About 1 minute per version and workload.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import matrix  # noqa: E402  (environments, workloads, archives, alternating timer)
from instructions import commands  # noqa: E402  (plain / SHARE command per workload)

GC = ("gc_collect_main", "visit_decref", "visit_reachable")
SPAN_MEMORY = ("__x64_sys_madvise", "__x64_sys_pread64")

_ROW = re.compile(r"^\s*([0-9.]+)%\s+(?:([0-9.]+)%\s+)?(.*?)\s*$")


def record(argv, env, runs, out):
    """``perf record`` of ``runs`` runs of ``argv`` (one data file)."""
    loop = 'i=0; while [ "$i" -lt %d ]; do "$@" >/dev/null 2>&1 || exit 1; i=$((i+1)); done' % runs
    r = subprocess.run(["perf", "record", "-q", "-F", "10000", "-e", "cpu-clock", "-g", "-o",
                        out, "--", "/bin/sh", "-c", loop, "sh", *argv],
                       env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        sys.exit("where_time_goes.py: perf record failed (exit %d): %s\n(the command itself "
                 "failing, or sampling not allowed: kernel.perf_event_paranoid must be <= 2)"
                 % (r.returncode, r.stderr.strip()[-300:]))


def report(data, comm, sort, children):
    """{name: percent} from ``perf report`` (self percent, or children percent)."""
    cmd = ["perf", "report", "-i", data, "--comms", comm, "--sort", sort, "-q", "-g", "none",
           "--percent-limit", "0", "--children" if children else "--no-children"]
    text = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    out = {}
    for line in text.splitlines():
        m = _ROW.match(line)
        if not m:
            continue
        name = m.group(3)
        if sort == "sym":  # "[.] name" / "[k] name"
            name = name.split("] ", 1)[-1]
        out[name] = out.get(name, 0.0) + float(m.group(1))
    return out


def shares(data, comm):
    """(extension %, span-memory %, GC %) of the samples of process ``comm``."""
    dsos = report(data, comm, "dso", children=False)
    ext = sum(p for d, p in dsos.items() if os.path.basename(d).startswith("_pycds"))
    incl = report(data, comm, "sym", children=True)
    mem = sum(incl.get(s, 0.0) for s in SPAN_MEMORY)
    own = report(data, comm, "sym", children=False)
    gc = sum(own.get(s, 0.0) for s in GC)
    return ext, mem, gc


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    matrix.add_matrix_args(ap, ["3.12", "3.11", "3.13"], ["W1", "W2", "W3"])
    ap.add_argument("-n", type=int, default=21, help="alternating pairs for the wall times")
    ap.add_argument("--runs", type=int, default=20, help="runs per command under perf")
    args = ap.parse_args()
    if shutil.which("perf") is None:
        sys.exit("where_time_goes.py: needs perf (Debian: apt-get install linux-perf)")
    args.no_cds = True
    req = matrix.requirements(args)
    print("Wall time: median of %d alternating pairs; shares: `perf record -e cpu-clock -g`, "
          "%d runs of each command, percent of the SHARE process's samples.\n"
          % (args.n, args.runs))
    print("| version | workload | plain | pycds SHARE (ratio) | `_pycds` extension "
          "| span memory (kernel) | GC plain / SHARE | ratio at zero extension cost |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="pycds-perf-") as tmp:
        for version in args.versions:
            for wl, cmds in commands(args, version, req).items():
                if "pycds" not in cmds:
                    continue
                pair = {k: cmds[k] for k in ("plain", "pycds")}
                t = matrix.ab(pair, args.n)
                comm = os.path.basename(pair["plain"][0][0])[:15]
                data = {}
                for lab, (argv, env) in pair.items():
                    data[lab] = os.path.join(tmp, "%s-%s-%s.data" % (version, wl, lab))
                    record(argv, env, args.runs, data[lab])
                ext, mem, gc = shares(data["pycds"], comm)
                gc_plain = shares(data["plain"], comm)[2]
                ms_plain, ms_share = t["plain"]["median_ms"], t["pycds"]["median_ms"]
                ratio = t["pycds"]["ratio"]
                print("| %s | %s | %.1f ms | %.1f ms (%.3f) | %.1f %% (%.1f ms) | %.1f %% "
                      "(%.1f ms) | %.1f / %.1f ms | %.3f |"
                      % (version, wl, ms_plain, ms_share, ratio, ext, ext * ms_share / 100,
                         mem, mem * ms_share / 100, gc_plain * ms_plain / 100,
                         gc * ms_share / 100, ratio * (1 - ext / 100)))
                sys.stdout.flush()


if __name__ == "__main__":
    main()
