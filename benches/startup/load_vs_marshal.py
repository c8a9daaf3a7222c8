"""Load the code objects of a workload's modules from a pycds archive vs `marshal.loads`
of the same `.pyc` payloads, each in fresh processes (alternating, many rounds).

    python benches/startup/load_vs_marshal.py [-n ROUNDS] [--workload FILE] [--load read|map]

Prints medians of the in-process load time and minor page faults for marshal and for
pycds (objects trusted, as the import hook loads them, and checked, `pycds.load`'s
default), the ratios, and the archive size vs the `.pyc` payload size. Run with the interpreter whose pycds
build you want to measure (e.g. .venv/3.12/bin/python).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_bench_archive import DEFAULT_WORKLOAD, save_code_archive, workload_modules  # noqa: E402

MARSHAL_CHILD = r"""
import marshal, resource, sys, time, json
payloads = [open(p, "rb").read()[16:] for p in json.load(open(sys.argv[1]))]
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
t0 = time.perf_counter()
codes = [marshal.loads(p) for p in payloads]
t1 = time.perf_counter()
f1 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
print(json.dumps({"seconds": t1 - t0, "faults": f1 - f0, "n": len(codes)}))
"""

PYCDS_CHILD = r"""
import pycds, resource, sys, time, json
names = json.load(open(sys.argv[2]))
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
t0 = time.perf_counter()
a = pycds.load(sys.argv[1], check=sys.argv[3] == "1")
codes = [a[n] for n in names]
t1 = time.perf_counter()
f1 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
print(json.dumps({"seconds": t1 - t0, "faults": f1 - f0, "n": len(codes)}))
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=21, help="rounds (default 21)")
    ap.add_argument("--workload", default=DEFAULT_WORKLOAD)
    ap.add_argument("--load", choices=("read", "map"), default="read")
    args = ap.parse_args()
    py = sys.executable
    mods = workload_modules(args.workload, py)
    with tempfile.TemporaryDirectory() as d:
        img = os.path.join(d, "w.img")
        pyc_bytes = save_code_archive(mods, img)
        size = os.path.getsize(img)
        cached_list = os.path.join(d, "cached.json")
        names_list = os.path.join(d, "names.json")
        json.dump([c for _, _, c in mods], open(cached_list, "w"))
        json.dump([n for n, _, _ in mods], open(names_list, "w"))
        env = dict(os.environ, PYCDS_LOAD=args.load)
        env.pop("PYCDSMODE", None)
        m_runs, p_runs, c_runs = [], [], []
        for _ in range(args.n):
            m_runs.append(json.loads(subprocess.check_output([py, "-c", MARSHAL_CHILD, cached_list], env=env)))
            p_runs.append(json.loads(subprocess.check_output([py, "-c", PYCDS_CHILD, img, names_list, "0"], env=env)))
            c_runs.append(json.loads(subprocess.check_output([py, "-c", PYCDS_CHILD, img, names_list, "1"], env=env)))
    med = lambda runs, k: statistics.median(r[k] for r in runs)
    ratios = [m["seconds"] / p["seconds"] for m, p in zip(m_runs, p_runs)]
    cratios = [m["seconds"] / p["seconds"] for m, p in zip(m_runs, c_runs)]
    print(f"python {sys.version.split()[0]}  modules {len(mods)}  rounds {args.n}  load={args.load}")
    print(f"marshal.loads             {med(m_runs, 'seconds')*1e3:8.3f} ms  {med(m_runs, 'faults'):7.0f} minor faults")
    print(f"pycds load (trusted)      {med(p_runs, 'seconds')*1e3:8.3f} ms  {med(p_runs, 'faults'):7.0f} minor faults"
          f"   speed-up {statistics.median(ratios):.2f}x   (the import hook's path)")
    print(f"pycds load (check=True)   {med(c_runs, 'seconds')*1e3:8.3f} ms  {med(c_runs, 'faults'):7.0f} minor faults"
          f"   speed-up {statistics.median(cratios):.2f}x   (pycds.load's default)")
    print("speed-up = median of the per-round ratios marshal / pycds")
    print(f"archive {size/1e6:.2f} MB vs .pyc payloads {pyc_bytes/1e6:.2f} MB: {size/pyc_bytes:.2f}x")


if __name__ == "__main__":
    main()
