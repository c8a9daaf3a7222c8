"""Start-up ratios by instruction count: plain CPython vs pycds SHARE vs the C package.

    python3 benches/startup/instructions.py [--versions 3.11 3.12 3.13] [--workloads W1 W2 W3]
                                            [-n 1] [--jobs 2] [--workdir /tmp/pycds-matrix]

Wall-time ratios on a noisy host move by several points from run to run (``matrix.py`` takes
medians of paired rounds for that reason); instruction counts under ``valgrind
--tool=callgrind`` repeat to within 0.1 %. They leave out what instructions do not show (page
faults, I/O, cache misses), so they complement the wall-time table, not replace it. Uses the
environments and archives of ``matrix.py`` (same ``--workdir``; made on first use, archives
recorded and dumped afresh). Prints one markdown table: instructions (millions, median of
``-n`` runs) and the ratio to plain. Takes about 10 minutes for three versions and W1-W3 on
two cores. Needs valgrind.
"""

import argparse
import concurrent.futures
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import matrix  # noqa: E402  (environments, workloads, archives)
from pth_floor import instructions  # noqa: E402  (callgrind's instruction count)


def commands(args, version, req):
    """{workload: {label: (argv, env)}} for one version."""
    base = matrix.venv(args.workdir, version, "base", req)
    pyc = matrix.venv(args.workdir, version, "pycds", req)
    cds = None if args.no_cds else matrix.venv(args.workdir, version, "cds", req)
    d = os.path.join(args.workdir, "run-" + version)
    os.makedirs(d, exist_ok=True)
    out = {}
    for wl in args.workloads:
        code, flags = matrix.workload(args.workloads_dir, wl)
        cmds = {"plain": ([base, *flags, "-c", code], matrix.clean_env())}
        img, _dump = matrix.pycds_archive(pyc, code, flags, d, wl)
        if img:
            cmds["pycds"] = ([pyc, *flags, "-c", code],
                             matrix.clean_env(PYCDSMODE="SHARE", PYCDSARCHIVE=img))
        cimg = matrix.cds_archive(cds, code, flags, d, wl) if cds else None
        if cimg:
            cmds["cds"] = ([cds, *flags, "-c", code],
                           matrix.clean_env(PYCDSMODE="SHARE", PYCDSARCHIVE=cimg))
        out[wl] = cmds
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    matrix.add_matrix_args(ap, ["3.11", "3.12", "3.13"], ["W1", "W2", "W3"])
    ap.add_argument("-n", type=int, default=1, help="callgrind runs per command (median)")
    ap.add_argument("--jobs", type=int, default=2, help="callgrind runs at once")
    ap.add_argument("--no-cds", action="store_true", help="leave out the C package")
    args = ap.parse_args()
    req = matrix.requirements(args)
    print("Instructions (millions, `valgrind --tool=callgrind`, median of %d run(s)) of the "
          "whole process; ratio to plain in parentheses.\n" % args.n)
    print("| version | workload | plain | pycds SHARE | C code-data-share |")
    print("|---|---|---|---|---|")
    for version in args.versions:
        cmds = commands(args, version, req)
        jobs = [(wl, lab, c) for wl, cs in cmds.items() for lab, c in cs.items()]
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            counts = dict(zip(((wl, lab) for wl, lab, _ in jobs),
                              pool.map(lambda j: instructions(j[2][0], j[2][1], args.n), jobs)))
        for wl in cmds:
            plain = counts[(wl, "plain")]
            cells = []
            for lab in ("pycds", "cds"):
                n = counts.get((wl, lab))
                cells.append("n/a" if n is None else "%.1f M (%.3f)" % (n / 1e6, n / plain))
            print("| %s | %s | %.1f M | %s | %s |" % (version, wl, plain / 1e6, *cells))
            sys.stdout.flush()


if __name__ == "__main__":
    main()
