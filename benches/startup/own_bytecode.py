#!/usr/bin/env python3
"""What SHARE costs when pycds's own start-up modules have no ``.pyc``, by instruction count.

Every process with ``PYCDSMODE`` set imports ``_pycds_boot`` (in SHARE mode, then ``pycds``
and ``pycds._hook``) before the archive is open. Installed without bytecode (``pip install
--no-compile``, ``uv pip install`` without ``--compile-bytecode``) and run with
``PYTHONDONTWRITEBYTECODE=1``, each process would compile them; the DUMP step writes their
``.pyc``. This installs the wheel that way into a fresh virtual environment of each CPython,
records and dumps the W1 workload (stdlib only), and counts the instructions of W1 and of
``python -c pass`` in SHARE mode with the ``.pyc`` files the DUMP wrote, then without them:

    python3 benches/startup/own_bytecode.py --versions 3.12 [--wheels dist] [-n 3]

Prints one markdown table (millions of instructions, median of ``-n`` runs). Needs valgrind
and pyenv's interpreters (``scripts/python-for.sh``).
"""
import argparse
import glob
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import matrix  # noqa: E402  (workloads)
from pth_floor import clean_env, instructions, python_for, site_packages  # noqa: E402


def own_pycs(sp):
    return sorted(glob.glob(os.path.join(sp, "__pycache__", "_pycds_boot.*.pyc"))
                  + glob.glob(os.path.join(sp, "pycds", "__pycache__", "*.pyc")))


def measure(version, wheels, workloads_dir, runs, tmp):
    tag = "cp" + version.replace(".", "")
    found = sorted(w for w in os.listdir(wheels) if w.startswith("pycds-") and "-%s-" % tag in w)
    if not found:
        sys.exit("no pycds wheel for %s in %s" % (tag, wheels))
    venv = os.path.join(tmp, version)
    subprocess.run([python_for(version), "-m", "venv", "--without-pip", venv], check=True)
    py = os.path.join(venv, "bin", "python")
    sp = site_packages(py)
    subprocess.run([python_for(version), "-m", "pip", "install", "-q", "--no-deps", "--no-compile",
                    "--disable-pip-version-check", "--root-user-action=ignore", "--target", sp,
                    os.path.join(wheels, found[-1])], check=True)
    code, flags = matrix.workload(workloads_dir, "W1")
    lst, img = os.path.join(tmp, version + ".lst"), os.path.join(tmp, version + ".img")
    env = clean_env(PYTHONDONTWRITEBYTECODE="1")
    subprocess.run([py, *flags, "-c", code], check=True,
                   env=dict(env, PYCDSMODE="TRACE", PYCDSLIST=lst))
    if own_pycs(sp):
        sys.exit("pycds's .pyc files exist before the DUMP: %s" % own_pycs(sp))
    subprocess.run([py], check=True, stdin=subprocess.DEVNULL,
                   env=dict(env, PYCDSMODE="DUMP", PYCDSLIST=lst, PYCDSARCHIVE=img))
    written = own_pycs(sp)
    share = dict(env, PYCDSMODE="SHARE", PYCDSARCHIVE=img)
    cmds = {"W1": [py, *flags, "-c", code], "`python -c pass`": [py, "-c", "pass"]}
    with_pyc = {k: instructions(argv, share, runs) for k, argv in cmds.items()}
    for f in written:
        os.remove(f)
    without = {k: instructions(argv, share, runs) for k, argv in cmds.items()}
    if own_pycs(sp):
        sys.exit("a SHARE process wrote .pyc files despite PYTHONDONTWRITEBYTECODE")
    return len(written), {k: (without[k], with_pyc[k]) for k in cmds}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--versions", nargs="+", default=["3.12"])
    ap.add_argument("-n", type=int, default=3, help="runs per command (median)")
    ap.add_argument("--wheels", default=os.path.join(matrix.REPO, "dist"),
                    help="directory with the pycds wheels (default: dist/)")
    ap.add_argument("--workloads-dir",
                    default=os.environ.get("PYCDS_WORKLOADS", matrix.DEFAULT_WORKLOADS))
    a = ap.parse_args()
    print("| version | SHARE mode | without pycds's `.pyc` | with the `.pyc` the DUMP wrote "
          "| ratio |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="pycds-ownpyc-") as tmp:
        for v in a.versions:
            n, rows = measure(v, a.wheels, a.workloads_dir, a.n, tmp)
            for label, (without, with_pyc) in rows.items():
                print("| %s | %s | %.1f M | %.1f M (%d files) | %.3f |"
                      % (v, label, without / 1e6, with_pyc / 1e6, n, with_pyc / without))


if __name__ == "__main__":
    main()
