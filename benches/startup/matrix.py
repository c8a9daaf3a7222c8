"""Whole-process start-up benchmark: plain CPython vs pycds SHARE vs the C
``code-data-share`` package, per CPython version and workload, in one run.

    python3 benches/startup/matrix.py [--versions 3.11 3.12 3.13] [--workloads W0 W1 W2 W3]
                                      [-n 21] [--procs 8] [--out FILE.md] [--workdir DIR]

For each version it makes (once, cached in ``--workdir``) three virtual environments with
the workloads' packages: ``base`` (nothing else), ``pycds`` (+ this repository's wheel from
``dist/``, built by ``scripts/setup.sh``) and ``cds`` (+ ``code-data-share`` from PyPI, where
a wheel exists: 3.11 and 3.12). For each workload (``--workloads-dir``, default
``../shared/bench/workloads`` beside the checkout) it then:

* records and dumps an archive with each tool (TRACE then DUMP, as documented by each);
* times, round-robin after two warm-up rounds, ``n`` rounds of: plain (``base``), pycds
  installed but inactive (``idle``), pycds SHARE and C-pycds SHARE; per command the median
  wall time, the median of the per-round ratios to plain, minor page faults and peak RSS
  (from ``wait4``);
* starts ``--procs`` processes at once per tool, each running the workload and waiting,
  and sums their PSS from ``/proc/PID/smaps_rollup``;
* compares the archive size with the ``.pyc`` files of the modules it holds, counts the
  modules served, and times DUMP against a plain run of the workload (alternating).

Finally (``--big``, on by default) one archive of every importable standard-library
module is dumped and ``python -c pass`` is timed with and without it in SHARE mode: the
cost of an archive must grow with what is imported, not with its size.

Writes a markdown report (``--out``) and the raw figures next to it (``.json``). Linux only
(``/proc``). Run it on a quiet machine; it takes about 5 minutes per version with
``-n 21`` (plus the first set-up of the environments).
"""

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DEFAULT_WORKLOADS = os.path.join(REPO, "..", "shared", "bench", "workloads")


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def sh(cmd, env=None, cwd=None, check=True, capture=True):
    r = subprocess.run(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                       capture_output=capture, text=True)
    if check and r.returncode != 0:
        raise RuntimeError("%s failed (%d):\n%s\n%s" % (shlex.join(cmd), r.returncode,
                                                        r.stdout[-2000:], r.stderr[-2000:]))
    return r


def pyenv_python(version):
    root = sh(["pyenv", "root"]).stdout.strip()
    latest = sh(["pyenv", "latest", version]).stdout.strip()
    return os.path.join(root, "versions", latest, "bin", "python3")


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYCDS", "PYTHON"))}
    env.update({k: str(v) for k, v in extra.items() if v is not None})
    return env


# -- environments -------------------------------------------------------------------------

def venv(workdir, version, kind, requirements):
    """The interpreter of venv ``kind`` for ``version``, made on first use; None if its
    extra package cannot be installed (the C package on 3.13)."""
    d = os.path.join(workdir, "venv-%s-%s" % (version, kind))
    py = os.path.join(d, "bin", "python")
    marker = os.path.join(d, ".ready")
    if os.path.exists(marker):
        return py
    if os.path.exists(os.path.join(d, ".failed")):
        return None
    log("setting up %s venv for %s" % (kind, version))
    sh([pyenv_python(version), "-m", "venv", "--clear", d])
    pip = [py, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    sh(pip + ["-r", requirements])
    try:
        if kind == "pycds":
            tag = "cp" + version.replace(".", "")
            wheels = [w for w in os.listdir(os.path.join(REPO, "dist"))
                      if w.startswith("pycds-") and "-%s-" % tag in w]
            if not wheels:
                raise RuntimeError("no pycds wheel for %s in dist/ (run scripts/setup.sh %s)"
                                   % (version, version))
            sh(pip + ["--force-reinstall", "--no-deps",
                      os.path.join(REPO, "dist", sorted(wheels)[-1])])
        elif kind == "cds":
            sh(pip + ["--only-binary=:all:", "code-data-share"])
    except RuntimeError as e:
        if kind != "cds":
            raise
        log("  code-data-share unavailable for %s: %s" % (version, str(e).splitlines()[0]))
        open(os.path.join(d, ".failed"), "w").close()
        return None
    open(marker, "w").close()
    return py


# -- workloads ----------------------------------------------------------------------------

def workload(wl_dir, name):
    """(python -c code, extra interpreter flags) of workload ``name``."""
    lines = open(os.path.join(wl_dir, name + ".py")).read().splitlines()
    flags = []
    for ln in lines:
        if ln.startswith("# flags:"):
            flags = ln.split(":", 1)[1].split()
    code = ";".join(ln for ln in lines if ln.strip() and not ln.startswith("#"))
    return code, flags


# -- measurement --------------------------------------------------------------------------

def run_once(argv, env):
    """(wall seconds, minor faults, peak RSS KiB) of one run of ``argv``."""
    t0 = time.perf_counter()
    pid = os.posix_spawn(argv[0], argv, env, file_actions=[
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
        (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0)])
    _, status, ru = os.wait4(pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError("%s exited with %d" % (shlex.join(argv),
                                                  os.waitstatus_to_exitcode(status)))
    return wall, ru.ru_minflt, ru.ru_maxrss


def ab(commands, rounds, warmup=2):
    """Round-robin timing of ``{label: (argv, env)}``; per label: median wall ms, median
    per-round ratio to the first command with the quartiles of those ratios (how far one
    round's ratio strays on this host), median minor faults, median peak RSS (MiB)."""
    labels = list(commands)
    for _ in range(warmup):
        for lab in labels:
            run_once(*commands[lab])
    samples = {lab: [] for lab in labels}
    for _ in range(rounds):
        for lab in labels:
            samples[lab].append(run_once(*commands[lab]))
    base = [s[0] for s in samples[labels[0]]]
    out = {}
    for lab in labels:
        walls = [s[0] for s in samples[lab]]
        ratios = [w / b for w, b in zip(walls, base)]
        q1, _, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
        out[lab] = {
            "median_ms": statistics.median(walls) * 1e3,
            "ratio": statistics.median(ratios),
            "ratio_q1": q1,
            "ratio_q3": q3,
            "minflt": statistics.median(s[1] for s in samples[lab]),
            "maxrss_mib": statistics.median(s[2] for s in samples[lab]) / 1024,
        }
    return out


_WAIT = "\nimport sys as _s; _s.stdout.write('ready\\n'); _s.stdout.flush(); _s.stdin.readline()"


def concurrent(argv, env, procs, measure):
    """Starts ``procs`` processes of ``argv`` (whose last item is -c code) at once, waits
    until each has finished the workload, and returns ``measure(pid)`` of each."""
    argv = argv[:-1] + [argv[-1] + _WAIT]
    ps = [subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True) for _ in range(procs)]
    try:
        for p in ps:
            if p.stdout.readline().strip() != "ready":
                raise RuntimeError("%s did not start" % shlex.join(argv[:3]))
        return [measure(p.pid) for p in ps]
    finally:
        for p in ps:
            try:
                p.stdin.close()
            except OSError:
                pass
        for p in ps:
            p.wait(timeout=120)


def pss(argv, env, procs):
    """Total PSS (MiB) of ``procs`` processes of ``argv`` running at once, measured after
    each finished the workload."""
    def rollup(pid):
        with open("/proc/%d/smaps_rollup" % pid) as f:
            return sum(int(ln.split()[1]) for ln in f if ln.startswith("Pss:"))
    return sum(concurrent(argv, env, procs, rollup)) / 1024


# -- archives -----------------------------------------------------------------------------

def traced(py, code, flags, d, stem):
    """TRACE the workload with ``py`` (both tools use PYCDSMODE=TRACE/PYCDSLIST); returns
    the fresh list and the archive path to write, or None under -S (the start-up hook
    never runs)."""
    lst, img = os.path.join(d, stem + ".lst"), os.path.join(d, stem + ".img")
    for p in (lst, img):
        if os.path.exists(p):
            os.unlink(p)
    sh([py, *flags, "-c", code], env=clean_env(PYCDSMODE="TRACE", PYCDSLIST=lst), cwd=d)
    return (lst, img) if os.path.exists(lst) else None


def pycds_archive(py, code, flags, d, name):
    """pycds: TRACE then DUMP; returns the archive and the DUMP command (to time it)."""
    t = traced(py, code, flags, d, name)
    if t is None:
        return None, None
    lst, img = t
    dump = ([py], clean_env(PYCDSMODE="DUMP", PYCDSLIST=lst, PYCDSARCHIVE=img))
    sh(dump[0], env=dump[1], cwd=d)
    return img, dump


def cds_archive(py, code, flags, d, name):
    """The C package: TRACE then its documented dump call; returns the archive."""
    t = traced(py, code, flags, d, name + ".cds")
    if t is None:
        return None
    lst, img = t
    sh([py, "-c", "import cds.dump, sys; cds.dump.run_dump(sys.argv[1], sys.argv[2])", lst, img],
       env=clean_env(), cwd=d)
    return img


_ARCHIVE_INFO = r"""
import importlib.util, json, os, sys, pycds, pycds._pycds as n
info = pycds.inspect(sys.argv[1])
pyc = src = 0
for name, _size, meta in info["roots"]:
    m = n.decode_module_meta(meta)
    if m["kind"] == "extension":
        continue
    src += 1
    c = m["cached"] or importlib.util.cache_from_source(m["origin"])
    if os.path.exists(c):
        pyc += os.path.getsize(c)
print(json.dumps({"modules": src, "roots": len(info["roots"]), "pyc_bytes": pyc,
                  "archive_bytes": os.path.getsize(sys.argv[1])}))
"""

_SERVED = "\nimport json as _j, pycds as _p; _s = _p.stats(); print(_j.dumps([len(_s['served']), len(_s['fallbacks'])]))"


# -- the run ------------------------------------------------------------------------------

def measure_version(args, version, req):
    wd = args.workdir
    base = venv(wd, version, "base", req)
    pyc = venv(wd, version, "pycds", req)
    cds = None if args.no_cds else venv(wd, version, "cds", req)
    d = os.path.join(wd, "run-" + version)
    os.makedirs(d, exist_ok=True)
    res = {"version": sh([base, "-c", "import sys; print(sys.version.split()[0])"]).stdout.strip(),
           "workloads": {}}
    for wl in args.workloads:
        code, flags = workload(args.workloads_dir, wl)
        log("== %s %s" % (version, wl))
        r = {"flags": flags}
        img, dump = pycds_archive(pyc, code, flags, d, wl)
        cimg = cds_archive(cds, code, flags, d, wl) if cds else None
        cmds = {"plain": ([base, *flags, "-c", code], clean_env())}
        cmds["idle"] = ([pyc, *flags, "-c", code], clean_env())
        if img:
            cmds["pycds"] = ([pyc, *flags, "-c", code],
                             clean_env(PYCDSMODE="SHARE", PYCDSARCHIVE=img))
        if cimg:
            cmds["cds"] = ([cds, *flags, "-c", code],
                           clean_env(PYCDSMODE="SHARE", PYCDSARCHIVE=cimg))
        r["timing"] = ab(cmds, args.n)
        if img:
            info = json.loads(sh([pyc, "-c", _ARCHIVE_INFO, img], env=clean_env()).stdout)
            served = json.loads(sh([pyc, *flags, "-c", code + _SERVED],
                                   env=cmds["pycds"][1]).stdout.splitlines()[-1])
            r["archive"] = dict(info, served=served[0], fallbacks=served[1])
            # DUMP vs a plain run of the workload (whole processes, alternating).
            r["dump"] = ab({"plain": cmds["plain"], "dump": dump}, max(5, args.n // 4), warmup=1)
        if cimg:
            r["cds_archive_bytes"] = os.path.getsize(cimg)
        if args.procs and flags == []:
            r["pss_mib"] = {lab: pss(argv, env, args.procs) for lab, (argv, env) in cmds.items()
                            if lab != "idle"}
        res["workloads"][wl] = r
        log(json.dumps(r["timing"]))
    if args.big:
        res["big"] = big_archive(pyc, base, d, args.n)
    return res


_ALL_STDLIB = r"""
import importlib, pkgutil, sys, sysconfig, warnings
warnings.simplefilter("ignore")
skip = ("test", "idlelib", "tkinter", "turtledemo", "lib2to3", "ensurepip", "venv", "turtle",
        "antigravity", "this", "__main__", "pydoc_data", "xxlimited")
std = sysconfig.get_paths()["stdlib"]
for m in pkgutil.walk_packages([std], onerror=lambda n: None):
    if m.name.split(".")[0] in skip or "test" in m.name.split(".") or m.name.startswith("_"):
        continue
    try:
        importlib.import_module(m.name)
    except BaseException:
        pass
"""


def big_archive(pyc, base, d, n):
    """An archive of every importable stdlib module; ``-c pass`` with and without it."""
    log("== big archive")
    script = os.path.join(d, "all_stdlib.py")
    with open(script, "w") as f:
        f.write(_ALL_STDLIB)
    lst, img = os.path.join(d, "big.lst"), os.path.join(d, "big.img")
    for p in (lst, img):
        if os.path.exists(p):
            os.unlink(p)
    sh([pyc, script], env=clean_env(PYCDSMODE="TRACE", PYCDSLIST=lst), cwd=d)
    sh([pyc], env=clean_env(PYCDSMODE="DUMP", PYCDSLIST=lst, PYCDSARCHIVE=img), cwd=d)
    info = json.loads(sh([pyc, "-c", _ARCHIVE_INFO, img], env=clean_env()).stdout)
    t = ab({"plain": ([base, "-c", "pass"], clean_env()),
            "pycds": ([pyc, "-c", "pass"], clean_env(PYCDSMODE="SHARE", PYCDSARCHIVE=img))},
           max(n, 31))
    return {"archive": info, "timing": t}


def fmt_ratio(t, lab):
    if lab not in t:
        return "n/a"
    r = t[lab]
    if "ratio_q1" not in r:  # (results of an older run)
        return "%.1f ms (%.3f)" % (r["median_ms"], r["ratio"])
    return "%.1f ms (%.3f; %.2f–%.2f)" % (r["median_ms"], r["ratio"], r["ratio_q1"], r["ratio_q3"])


def report(results, args):
    out = ["# Start-up benchmark", "",
           "`%s` (%s), %d rounds per command, PSS of %d concurrent processes."
           % (" ".join(["python3", "benches/startup/matrix.py"] + sys.argv[1:]),
              time.strftime("%Y-%m-%d"), args.n, args.procs), "",
           "Wall time: median, with the median of the per-round ratios to plain CPython in "
           "parentheses (lower is better) and their interquartile range (half of the rounds "
           "fall in it: the host's spread); *idle* = pycds installed, `PYCDSMODE` unset. "
           "Faults: minor page faults (median). PSS: total of all processes, MiB. Archive: "
           "size / `.pyc` bytes of the modules it holds. DUMP: whole DUMP process / plain run "
           "of the workload.", ""]
    for res in results:
        out += ["## CPython %s" % res["version"], "",
                "| workload | plain | idle | pycds SHARE | C code-data-share | faults plain / pycds / C"
                " | peak RSS MiB plain / pycds / C | PSS MiB plain / pycds / C | served | archive"
                " | C archive | DUMP |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for wl, r in res["workloads"].items():
            t = r["timing"]
            g = lambda k, lab: ("%.0f" % t[lab][k]) if lab in t else "n/a"  # noqa: E731
            gr = lambda k, lab: ("%.1f" % t[lab][k]) if lab in t else "n/a"  # noqa: E731
            p = r.get("pss_mib", {})
            a = r.get("archive")
            arch = ("%.1f MB / %.1f MB (%.2f×)" % (a["archive_bytes"] / 1e6, a["pyc_bytes"] / 1e6,
                                                   a["archive_bytes"] / max(a["pyc_bytes"], 1))
                    if a else "n/a")
            carch = ("%.1f MB (%.2f×)" % (r["cds_archive_bytes"] / 1e6,
                                          r["cds_archive_bytes"] / max(a["pyc_bytes"], 1))
                     if a and "cds_archive_bytes" in r else "n/a")
            dump = ("%.2f×" % r["dump"]["dump"]["ratio"]) if "dump" in r else "n/a"
            served = ("%d/%d" % (a["served"], a["roots"])) if a else "n/a"
            flags = (" (`%s`)" % " ".join(r["flags"])) if r["flags"] else ""
            out.append("| %s%s | %s | %s | %s | %s | %s / %s / %s | %s / %s / %s | %s | %s | %s | %s | %s |" % (
                wl, flags, "%.1f ms" % t["plain"]["median_ms"], fmt_ratio(t, "idle"),
                fmt_ratio(t, "pycds"), fmt_ratio(t, "cds"),
                g("minflt", "plain"), g("minflt", "pycds"), g("minflt", "cds"),
                gr("maxrss_mib", "plain"), gr("maxrss_mib", "pycds"), gr("maxrss_mib", "cds"),
                " / ".join(("%.0f" % p[k]) if k in p else "n/a" for k in ("plain", "pycds", "cds")),
                served, arch, carch, dump))
        if "big" in res:
            b = res["big"]
            out += ["", "Archive of every importable standard-library module (%d modules, %.1f MB):"
                    " `python -c pass` plain %.1f ms, SHARE %s." % (
                        b["archive"]["modules"], b["archive"]["archive_bytes"] / 1e6,
                        b["timing"]["plain"]["median_ms"], fmt_ratio(b["timing"], "pycds"))]
        out.append("")
    return "\n".join(out)


def add_matrix_args(ap, versions, workloads):
    """The options every script using the matrix's environments takes: ``--versions``,
    ``--workloads``, ``--workloads-dir`` (default ``$PYCDS_WORKLOADS`` or
    ``../shared/bench/workloads``) and ``--workdir`` (where the environments and archives
    live, shared by all of them)."""
    ap.add_argument("--versions", nargs="+", default=list(versions))
    ap.add_argument("--workloads", nargs="+", default=list(workloads))
    ap.add_argument("--workloads-dir", default=os.environ.get("PYCDS_WORKLOADS", DEFAULT_WORKLOADS))
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "pycds-matrix"))


def requirements(args):
    """The workloads' requirements file, or exit saying where the workloads were looked for."""
    req = os.path.join(args.workloads_dir, "requirements.txt")
    if not os.path.exists(req):
        sys.exit("workloads not found in %s (--workloads-dir or PYCDS_WORKLOADS)" % args.workloads_dir)
    return req


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_matrix_args(ap, ["3.11", "3.12", "3.13"], ["W0", "W1", "W2", "W3"])
    ap.add_argument("-n", type=int, default=21, help="rounds per command (default 21)")
    ap.add_argument("--procs", type=int, default=8, help="concurrent processes for PSS (0: skip)")
    ap.add_argument("--no-cds", action="store_true", help="skip the C code-data-share package")
    ap.add_argument("--no-big", dest="big", action="store_false",
                    help="skip the whole-stdlib archive measurement")
    ap.add_argument("--out", default=os.path.join(HERE, "RESULTS.md"))
    args = ap.parse_args()
    req = requirements(args)
    os.makedirs(args.workdir, exist_ok=True)
    results = [measure_version(args, v, req) for v in args.versions]
    text = report(results, args)
    with open(args.out, "w") as f:
        f.write(text + "\n")
    with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
        json.dump(results, f, indent=1)
    print(text)


if __name__ == "__main__":
    main()
