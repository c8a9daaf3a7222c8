"""Write a pycds archive of the code objects of a workload's modules, as `pycds.save`
stores them (one root per module, named after it), for the Rust benches.

    python benches/startup/make_bench_archive.py OUT.img [--workload FILE]

Run it with the interpreter whose layout you want (e.g. .venv/3.12/bin/python); the
criterion benches then read it: `PYCDS_BENCH_ARCHIVE=OUT.img cargo bench -p pycds-benches
--bench pyformat`. The workload defaults to ../shared/bench/workloads/W1.py beside the
checkout.
"""

import argparse
import json
import marshal
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_WORKLOAD = os.path.join(HERE, "..", "..", "..", "shared", "bench", "workloads", "W1.py")

_LIST_MODULES = r"""
import sys, json, importlib.machinery as m
exec(compile(open(sys.argv[1]).read(), sys.argv[1], "exec"), {"__name__": "workload"})
out = []
for name, mod in list(sys.modules.items()):
    spec = getattr(mod, "__spec__", None)
    if spec and isinstance(spec.loader, m.SourceFileLoader) and spec.cached and name != "__main__":
        out.append((name, spec.origin, spec.cached))
print(json.dumps(out))
"""


def workload_modules(workload, python=sys.executable):
    """``[(name, origin, cached)]`` of the source modules a fresh interpreter imports when
    it runs ``workload``."""
    return json.loads(subprocess.check_output([python, "-c", _LIST_MODULES, workload]))


def save_code_archive(mods, out):
    """Save the code objects of ``mods`` (from their ``.pyc`` files) to ``out``; returns
    the total size of the ``.pyc`` payloads."""
    import pycds
    roots, pyc_bytes = {}, 0
    for name, _origin, cached in mods:
        with open(cached, "rb") as f:
            data = f.read()
        pyc_bytes += len(data) - 16
        roots[name] = marshal.loads(data[16:])
    pycds.save(out, roots)
    return pyc_bytes


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--workload", default=DEFAULT_WORKLOAD)
    args = ap.parse_args()
    mods = workload_modules(args.workload)
    pyc = save_code_archive(mods, args.out)
    print("%s: %d modules, %d bytes (.pyc payloads %d bytes)"
          % (args.out, len(mods), os.path.getsize(args.out), pyc))


if __name__ == "__main__":
    main()
