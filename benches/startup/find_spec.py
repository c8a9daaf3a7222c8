"""``find_spec`` of the SHARE finder vs importlib's ``PathFinder`` for the same modules.

    python benches/startup/find_spec.py [--workload FILE] [-n ROUNDS]

Run with the interpreter whose pycds build you want to measure (e.g.
``.venv/3.12/bin/python``). In a fresh interpreter: trace and dump the workload's modules
into a temporary archive, then time, in this process and alternating for ``ROUNDS``
rounds, one ``find_spec`` call per archived module (1) through the pycds finder (module
index, search-path and shadowing checks, staleness ``stat``, spec construction) and (2)
through ``PathFinder.find_spec`` (the path search a normal import makes; its directory
listings cached after the first round, as in a running program). Prints the median time
per call of each. The finder's cost is mostly building Python objects (the spec, its
loader), so it is measured from Python rather than with criterion.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_bench_archive import DEFAULT_WORKLOAD  # noqa: E402

_CHILD = r"""
import sys, time, statistics, importlib.machinery as m
import pycds, pycds._hook as h
code = open(sys.argv[2]).read()
exec(compile(code, sys.argv[2], "exec"), {"__name__": "workload"})
archive = pycds._pycds.load(sys.argv[1], False)
finder = pycds._pycds.Finder(archive, h.CDSLoader, h.CDSExtensionLoader, h._fallback,
                             h._found_in_other_entry)
names = [n for n in archive.keys() if n in sys.modules]
paths = {n: getattr(sys.modules[n.rpartition(".")[0]], "__path__", None)
         if "." in n else None for n in names}
rounds = int(sys.argv[3])
ours, theirs = [], []
for _ in range(rounds):
    t = time.perf_counter()
    for n in names:
        finder.find_spec(n, paths[n])
    ours.append((time.perf_counter() - t) / len(names))
    t = time.perf_counter()
    for n in names:
        m.PathFinder.find_spec(n, paths[n])
    theirs.append((time.perf_counter() - t) / len(names))
assert not h._state["fallbacks"], h._state["fallbacks"]
print(len(names), statistics.median(ours) * 1e6, statistics.median(theirs) * 1e6)
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", default=DEFAULT_WORKLOAD)
    ap.add_argument("-n", type=int, default=21, help="rounds (default 21)")
    args = ap.parse_args()
    py = sys.executable
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYCDS")}
    with tempfile.TemporaryDirectory() as d:
        lst, img = os.path.join(d, "w.lst"), os.path.join(d, "w.img")
        subprocess.run([py, args.workload], env=dict(env, PYCDSMODE="TRACE", PYCDSLIST=lst),
                       check=True, stdout=subprocess.DEVNULL)
        subprocess.run([py], env=dict(env, PYCDSMODE="DUMP", PYCDSLIST=lst, PYCDSARCHIVE=img),
                       check=True, stdin=subprocess.DEVNULL)
        out = subprocess.run([py, "-c", _CHILD, img, args.workload, str(args.n)], env=env,
                             check=True, capture_output=True, text=True).stdout.split()
    n, ours, theirs = int(out[0]), float(out[1]), float(out[2])
    print("python %s  %d modules  %d rounds" % (sys.version.split()[0], n, args.n))
    print("pycds Finder.find_spec      %6.2f us per module" % ours)
    print("importlib PathFinder.find_spec %6.2f us per module (listings cached)" % theirs)


if __name__ == "__main__":
    main()
