#!/usr/bin/env python3
"""What a ``.pth`` start-up hook costs ``python -c pass``, by instruction count.

pycds is activated by one line in ``pycds.pth``; issue 5 asks that an installed but inactive
pycds cost at most 1 % of a bare start. This measures, with ``valgrind --tool=callgrind``
(instruction counts are stable on a noisy host), a fresh virtual environment of each CPython
whose site-packages holds nothing but one ``.pth`` file of each kind below, so the floor of
any ``.pth``-based hook can be read off; then the same environment with the pycds wheel
installed (idle, and in SHARE mode, where ``python -c pass`` imports nothing, so the archive
is never opened):

    python3 benches/startup/pth_floor.py --versions 3.11 3.12 3.13 [--wheels dist] [-n 3]

Prints one markdown table: instructions (millions, median of ``-n`` runs) and the ratio to
the bare environment. Needs valgrind and pyenv's interpreters (``scripts/python-for.sh``).
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

# (label, .pth content or None for no .pth file)
VARIANTS = [
    ("no .pth", None),
    ("empty .pth (0 bytes)", ""),
    ("comment line only", "# nothing\n"),
    ("`import os`", "import os\n"),
    ("env check, imports nothing", "import os; os.environ.get('PYCDSMODE')\n"),
    ("cheapest env check found (`posix`)",
     "import posix; b'PYCDSMODE' in posix.environ and __import__('_pycds_boot')\n"),
    ("pycds's line", "import os; os.environ.get('PYCDSMODE') and __import__('_pycds_boot')\n"),
]


def python_for(version):
    out = subprocess.run([os.path.join(ROOT, "scripts", "python-for.sh"), version],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def instructions(argv, env, runs):
    counts = []
    for _ in range(runs):
        p = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
                           + argv, env=env, capture_output=True, text=True)
        m = re.search(r"Collected : (\d+)", p.stderr)
        if p.returncode != 0 or not m:
            sys.exit("callgrind failed for %s:\n%s" % (argv, p.stderr[-2000:]))
        counts.append(int(m.group(1)))
    return statistics.median(counts)


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYCDS", "PYTHON"))}
    env.update(extra)
    return env


def site_packages(venv_python):
    return subprocess.run([venv_python, "-c", "import site; print(site.getsitepackages()[0])"],
                          capture_output=True, text=True, check=True,
                          env=clean_env()).stdout.strip()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--versions", nargs="+", default=["3.11", "3.12", "3.13"])
    ap.add_argument("-n", type=int, default=3, help="runs per variant (median)")
    ap.add_argument("--wheels", default=os.path.join(ROOT, "dist"),
                    help="directory with the pycds wheels (pycds-*-cpXY-*.whl) for the idle and "
                    "SHARE rows (default: dist/; a version without a wheel gets n/a)")
    a = ap.parse_args()
    rows, cols = {}, []
    with tempfile.TemporaryDirectory(prefix="pycds-pth-") as tmp:
        for v in a.versions:
            venv = os.path.join(tmp, v)
            subprocess.run([python_for(v), "-m", "venv", "--without-pip", venv], check=True)
            py = os.path.join(venv, "bin", "python")
            sp = site_packages(py)
            pth = os.path.join(sp, "zz_probe.pth")
            env = clean_env()
            subprocess.run([py, "-c", "pass"], env=env, check=True)  # warm .pyc caches
            col = "%s (%s)" % (v, subprocess.run([py, "-c", "import sys; print(sys.version.split()[0])"],
                                                 capture_output=True, text=True,
                                                 env=env).stdout.strip())
            cols.append(col)
            base = None
            for label, content in VARIANTS:
                if os.path.exists(pth):
                    os.remove(pth)
                if content is not None:
                    with open(pth, "w") as f:
                        f.write(content)
                subprocess.run([py, "-c", "pass"], env=env, check=True)
                n = instructions([py, "-c", "pass"], env, a.n)
                base = base or n
                rows.setdefault(label, {})[col] = (n, n / base)
            if os.path.exists(pth):
                os.remove(pth)
            tag = "cp" + v.replace(".", "")
            wheels = [w for w in os.listdir(a.wheels) if w.startswith("pycds-")
                      and "-%s-" % tag in w] if os.path.isdir(a.wheels) else []
            if wheels:
                # Files only (pycds.pth, _pycds_boot.py, the package): no dependencies.
                subprocess.run([python_for(v), "-m", "pip", "install", "-q", "--no-deps",
                                "--disable-pip-version-check", "--root-user-action=ignore",
                                "--target", sp,
                                os.path.join(a.wheels, sorted(wheels)[-1])], check=True)
                for label, extra in [("pycds installed, idle", {}),
                                     ("pycds SHARE (archive never opened)",
                                      {"PYCDSMODE": "SHARE",
                                       "PYCDSARCHIVE": os.path.join(tmp, "none.img")})]:
                    e = clean_env(**extra)
                    subprocess.run([py, "-c", "pass"], env=e, check=True)
                    n = instructions([py, "-c", "pass"], e, a.n)
                    rows.setdefault(label, {})[col] = (n, n / base)
    print("| `python -c pass`, site-packages holding | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    for label, per in rows.items():
        cells = ["%.2f M (%.4f)" % (per[c][0] / 1e6, per[c][1]) if c in per else "n/a"
                 for c in cols]
        print("| %s | %s |" % (label, " | ".join(cells)))


if __name__ == "__main__":
    main()
