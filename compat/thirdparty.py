"""Third-party packages' own test suites, run plain and with the package served by pycds.

Usage (stdlib only):

    python3 compat/thirdparty.py --python /path/to/venv/bin/python [--packages packaging attrs jinja2]

``--python`` must be the interpreter of a virtual environment that already has pycds
installed (``pip install dist/pycds-*.whl``). That environment is modified: the packages
under test (built from their sdists, non-editable) and their test requirements (pytest,
hypothesis, ... from PyPI) are installed into it, so use a throw-away venv.

For each package:

1. ``pip download --no-binary :all: --no-deps`` fetches its sdist (``NAME`` or
   ``NAME==VERSION``), which is unpacked in a scratch directory;
2. its test requirements (the ``test``/``tests`` dependency group of its pyproject.toml,
   else ``requirements/tests.in``, else the table below) are installed, then the package
   itself from the unpacked sdist (``pip install --force-reinstall``, not editable: its
   modules live in site-packages and are archived like any installed package);
3. TRACE: ``python -m pytest`` on the sdist's tests with PYCDSMODE=TRACE;
4. DUMP: one PYCDSMODE=DUMP process writes the archive;
5. plain and SHARE pytest runs, compared: outcome counts (passed, failed, error,
   skipped, xfailed, xpassed) and the set of failing test ids (from ``--junitxml``).
   Packages that differ are run again both ways to tell flaky tests from real differences.

The SHARE run must serve the package's own modules (e.g. ``packaging.version``): the
modules served are read from ``pycds.stats()`` at exit through the same launcher as in
compat/regrtest.py (no PYCDSVERBOSE in the compared runs).

Prints a markdown table and a summary line; exits 1 when SHARE differs from plain
reproducibly or a package's own modules were not served.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import suitelib  # noqa: E402

# Fallback test requirements, and the top-level import names of each package.
KNOWN = {
    "packaging": {"deps": ["pytest", "pretend", "tomli_w"], "imports": ["packaging"]},
    "attrs": {"deps": ["pytest", "hypothesis", "pympler", "cloudpickle"],
              "imports": ["attr", "attrs"]},
    "jinja2": {"deps": ["pytest", "trio"], "imports": ["jinja2"]},
}
# Test requirements never installed: parallel runners, coverage, type checkers.
SKIP_DEPS = re.compile(r"^(pytest-xdist|pytest-cov|coverage|mypy|pytest-mypy|pyright|"
                       r"pytest-codspeed|pytest-benchmark)\b", re.I)

PIP_TIMEOUT = 900
PYTEST_TIMEOUT = 1800


def pip(python, args, cwd):
    cmd = [python, "-m", "pip", "--disable-pip-version-check", "--no-input"] + args
    env = suitelib.clean_env()
    rc, out, _ = suitelib.run(cmd, env, cwd, PIP_TIMEOUT, os.path.join(cwd, "pip.log"))
    if rc != 0:
        raise SystemExit("pip %s failed (rc=%s):\n%s" % (" ".join(args), rc, out[-4000:]))
    return out


def unpack(archive, dest):
    if archive.endswith(".zip"):
        with zipfile.ZipFile(archive) as z:
            z.extractall(dest)
    else:
        with tarfile.open(archive) as t:
            if hasattr(tarfile, "data_filter"):
                t.extractall(dest, filter="data")
            else:
                t.extractall(dest)
    tops = [d for d in os.listdir(dest) if os.path.isdir(os.path.join(dest, d))]
    if len(tops) != 1:
        raise SystemExit("unexpected sdist layout in %s: %s" % (archive, tops))
    return os.path.join(dest, tops[0])


def test_requirements(name, src):
    """Requirement strings for the package's tests."""
    reqs = None
    pyproject = os.path.join(src, "pyproject.toml")
    try:
        import tomllib
        with open(pyproject, "rb") as f:
            groups = tomllib.load(f).get("dependency-groups", {})
        for g in ("test", "tests"):
            if g in groups:
                reqs = [r for r in groups[g] if isinstance(r, str)]
                break
    except (ImportError, OSError, ValueError):
        pass
    if reqs is None:
        for path in ("requirements/tests.in", "requirements/test.in",
                     "requirements-test.txt", "test-requirements.txt"):
            p = os.path.join(src, path)
            if os.path.exists(p):
                with open(p, encoding="utf-8") as f:
                    reqs = [ln.split("#")[0].strip() for ln in f]
                reqs = [r for r in reqs if r and not r.startswith("-")]
                break
    if reqs is None:
        reqs = KNOWN.get(name, {}).get("deps", ["pytest"])
    reqs = [r for r in reqs if not SKIP_DEPS.match(r)]
    if not any(re.match(r"^pytest\b(?!-)", r) for r in reqs):
        reqs.insert(0, "pytest")
    return reqs


def parse_junit(path):
    """({test id: outcome}, {test id: failure message}) from pytest's --junitxml file."""
    out, msgs = {}, {}
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None, {}
    for tc in root.iter("testcase"):
        tid = "%s::%s" % (tc.get("classname", ""), tc.get("name", ""))
        outcome = "passed"
        for child in tc:
            if child.tag in ("failure", "error"):
                msgs["%s::%s" % (tc.get("classname", ""), tc.get("name", ""))] = \
                    (child.get("message") or "").splitlines()[0][:160] if child.get("message") else ""
            if child.tag == "failure":
                outcome = "failed"
            elif child.tag == "error":
                # pytest reports a setup/teardown error as an extra <testcase> entry with an
                # <error>, a real call failure as <failure>.
                outcome = "error"
            elif child.tag == "skipped":
                outcome = "xfailed" if child.get("type") == "pytest.xfail" else "skipped"
        if tid in out and out[tid] != "passed":
            if outcome == "passed":
                continue
        out[tid] = outcome
    return out, msgs


_SUMMARY = re.compile(r"^(?:=+ )?(\d+ [a-z]+(?:, \d+ [a-z]+)*) in [\d.]+s(?: \(.*\))?(?: =+)?$")


def summary_counts(out):
    """Counts from pytest's last line (``=== 3 passed, 1 skipped in 0.1s ===``)."""
    counts = {}
    for line in out.splitlines():
        m = _SUMMARY.match(line.strip())
        if m:
            counts = {}
            for part in m.group(1).split(", "):
                n, _, what = part.partition(" ")
                if n.isdigit():
                    what = {"error": "errors", "warning": "warnings"}.get(what, what)
                    counts[what] = int(n)
    return counts


def key(res):
    c = res["counts"]
    return (tuple(sorted((k, v) for k, v in c.items() if k != "warnings")),
            tuple(res["failing"]))


def short(res):
    if res["rc"] == "TIMEOUT":
        return "TIMEOUT"
    c = res["counts"]
    if not c:
        return "CRASHED (rc=%s)" % res["rc"]
    parts = ["%d %s" % (c[k], k) for k in ("passed", "failed", "errors", "skipped",
                                           "xfailed", "xpassed") if c.get(k)]
    return ", ".join(parts)


class Package:
    def __init__(self, spec, python, scratch, log):
        self.spec = spec
        self.name = re.split(r"[=<>!~\[ ]", spec, 1)[0].lower()
        self.python = python
        self.dir = os.path.join(scratch, self.name)
        os.makedirs(os.path.join(self.dir, "logs"), exist_ok=True)
        self.lst = os.path.join(self.dir, "modules.lst")
        self.archive = os.path.join(self.dir, "archive.img")
        self.log = log
        self.n = 0
        self.src = None
        self.version = None
        self.imports = KNOWN.get(self.name, {}).get("imports", [self.name.replace("-", "_")])

    def prepare(self):
        dl = os.path.join(self.dir, "sdist")
        os.makedirs(dl, exist_ok=True)
        pip(self.python, ["download", "-q", "--no-binary", ":all:", "--no-deps", "-d", dl,
                          self.spec], self.dir)
        archives = [f for f in os.listdir(dl) if f.endswith((".tar.gz", ".zip", ".tgz"))]
        if len(archives) != 1:
            raise SystemExit("expected one sdist for %s, got %s" % (self.spec, archives))
        self.src = unpack(os.path.join(dl, archives[0]), os.path.join(self.dir, "src"))
        reqs = test_requirements(self.name, self.src)
        self.log("%s: sdist %s; test requirements: %s" % (self.name, archives[0], " ".join(reqs)))
        pip(self.python, ["install", "-q"] + reqs, self.dir)
        # The package itself from its sdist, replacing any wheel a test requirement brought
        # (pytest depends on packaging): first with its dependencies, then forced.
        pip(self.python, ["install", "-q", self.src], self.dir)
        pip(self.python, ["install", "-q", "--force-reinstall", "--no-deps", "--no-cache-dir",
                          self.src], self.dir)
        code = ("import importlib.metadata as m, sys; d = m.distribution(%r); "
                "print(d.version); print((d.read_text('INSTALLER') or '?').strip());"
                "import %s as p; print(p.__file__)" % (self.name, self.imports[0]))
        out = subprocess.run([self.python, "-c", code], env=suitelib.clean_env(), cwd=self.dir,
                             capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise SystemExit("%s is not importable after install:\n%s" % (self.name, out.stderr))
        self.version, self.installer, self.module_file = out.stdout.split("\n")[:3]
        if not self.module_file or "site-packages" not in self.module_file:
            raise SystemExit("%s is not installed in site-packages: %r"
                             % (self.name, self.module_file))
        if os.path.abspath(self.module_file).startswith(os.path.abspath(self.src)):
            raise SystemExit("%s imports from the sdist tree, not site-packages" % self.name)
        self.log("%s %s installed: %s" % (self.name, self.version, self.module_file))

    def pytest(self, mode):
        self.n += 1
        tag = "%02d-%s" % (self.n, mode)
        logs = os.path.join(self.dir, "logs")
        junit = os.path.join(logs, tag + ".xml")
        stats_path = os.path.join(logs, tag + ".stats")
        args = ["-p", "no:cacheprovider", "-q", "-rfE", "--junitxml", junit]
        if self.has_hypothesis():
            args.append("--hypothesis-seed=0")
        args.append("tests")
        cmd = suitelib.launcher_cmd(self.python, stats_path, "pytest", args)
        env = suitelib.mode_env(mode, self.lst, self.archive)
        # Each run starts from the same state: no pytest or hypothesis cache left behind.
        shutil.rmtree(os.path.join(self.src, ".hypothesis"), ignore_errors=True)
        rc, out, secs = suitelib.run(cmd, env, self.src, PYTEST_TIMEOUT,
                                    os.path.join(logs, tag + ".log"))
        cases, msgs = parse_junit(junit)
        cases = cases or {}
        res = {"rc": rc, "seconds": round(secs, 1), "log": os.path.join(logs, tag + ".log"),
               "counts": summary_counts(out),
               "failing": sorted(t for t, o in cases.items() if o in ("failed", "error")),
               "cases": len(cases), "messages": {t: msgs.get(t, "") for t in cases
                                                  if cases[t] in ("failed", "error")}}
        stats = suitelib.read_stats(stats_path)
        served = sorted(set(stats["served"])) if stats else []
        res["served"] = len(served)
        res["served_imports"] = len(stats["served"]) if stats else 0
        res["served_own"] = [m for m in served
                             if any(m == i or m.startswith(i + ".") for i in self.imports)]
        res["served_names"] = served
        self.log("  %-10s %-6s %-50s %6.1fs%s" % (
            self.name, mode, short(res), secs,
            "  served %d (%d of %s)" % (len(served), len(res["served_own"]),
                                        "/".join(self.imports)) if mode == "share" else ""))
        return res

    def has_hypothesis(self):
        out = subprocess.run([self.python, "-c", "import hypothesis"], env=suitelib.clean_env(),
                             capture_output=True, timeout=120)
        return out.returncode == 0

    def own_modules(self):
        """The package's own modules listed by TRACE."""
        with open(self.lst, encoding="utf-8") as f:
            names = set(f.read().split())
        return sorted(m for m in names if any(m == i or m.startswith(i + ".")
                                              for i in self.imports))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", required=True,
                    help="interpreter of a (throw-away) venv that has pycds installed")
    ap.add_argument("--packages", nargs="+", default=["packaging", "attrs", "jinja2"],
                    help="PyPI names, optionally NAME==VERSION (default: %(default)s)")
    ap.add_argument("--no-recheck", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    ap.add_argument("--json", help="write all results to this JSON file")
    ap.add_argument("-q", "--quiet", action="store_true")
    ns = ap.parse_args(argv)

    t_start = time.monotonic()
    python = os.path.abspath(ns.python) if os.sep in ns.python else ns.python
    info = suitelib.python_info(python)
    if info["prefix"] == subprocess.run([python, "-c", "import sys; print(sys.base_prefix)"],
                                        capture_output=True, text=True).stdout.strip():
        raise SystemExit("%s is not a virtual environment's interpreter" % python)
    scratch = tempfile.mkdtemp(prefix="pycds-thirdparty-")
    log = (lambda *a: None) if ns.quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))
    log("pycds thirdparty: Python %s, pycds %s, scratch %s"
        % (info["version"], info["pycds"], scratch))

    rows, verdicts, problems = [], {}, []
    try:
        for spec in ns.packages:
            pkg = Package(spec, python, scratch, log)
            t0 = time.monotonic()
            pkg.prepare()
            prep = time.monotonic() - t0
            t0 = time.monotonic()
            trace = pkg.pytest("trace")
            n_mod, n_bytes, _ = suitelib.dump(python, pkg.lst, pkg.archive, pkg.dir)
            own_listed = pkg.own_modules()
            plain = pkg.pytest("plain")
            share = pkg.pytest("share")
            extra = {}
            if key(plain) == key(share):
                verdict = "same"
            elif ns.no_recheck:
                verdict = "DIFFERS"
            else:
                extra["plain2"] = p2 = pkg.pytest("plain")
                extra["share2"] = s2 = pkg.pytest("share")
                if key(p2) != key(plain):
                    verdict = "flaky (plain differs between runs)"
                elif key(s2) == key(plain):
                    verdict = "flaky (SHARE difference did not reproduce)"
                else:
                    verdict = "DIFFERS"
            if not share["served_own"]:
                problems.append("%s: none of its own modules was served" % pkg.name)
            missing_own = sorted(set(own_listed) - set(share["served_own"]))
            verdicts[pkg.name] = verdict
            rows.append({"package": pkg.name, "version": pkg.version, "trace": trace,
                         "plain": plain, "share": share, "extra": extra, "verdict": verdict,
                         "archive_modules": n_mod, "archive_bytes": n_bytes,
                         "own_listed": own_listed, "own_not_served": missing_own,
                         "prepare_seconds": round(prep, 1),
                         "test_seconds": round(time.monotonic() - t0, 1),
                         "module_file": pkg.module_file})
    except BaseException:
        log("stopped; scratch kept: %s" % scratch)
        raise
    total = time.monotonic() - t_start

    print("### pycds thirdparty: Python %s (%s), pycds %s\n"
          % (info["version"], python, info["pycds"]))
    print("| package | plain | SHARE | archive modules | served (own) | plain s | SHARE s "
          "| verdict |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print("| %s %s | %s | %s | %d | %d (%d/%d) | %.0f | %.0f | %s |" % (
            r["package"], r["version"], short(r["plain"]), short(r["share"]),
            r["archive_modules"], r["share"]["served"], len(r["share"]["served_own"]),
            len(r["own_listed"]), r["plain"]["seconds"], r["share"]["seconds"], r["verdict"]))
    print()
    for r in rows:
        print("- %s: own modules served: %s" % (r["package"], " ".join(r["share"]["served_own"])))
        for t in sorted(set(r["plain"]["failing"]) & set(r["share"]["failing"])):
            print("  - fails in both modes: `%s` (%s)" % (t, r["plain"]["messages"].get(t, "")))
        if r["own_not_served"]:
            print("  - listed by TRACE but not served: %s" % " ".join(r["own_not_served"]))
        if r["verdict"] != "same":
            p, s = r["plain"], r["share"]
            print("  - **%s**: plain %s; SHARE %s" % (r["verdict"], short(p), short(s)))
            for t in sorted(set(p["failing"]) - set(s["failing"])):
                print("  - fails only plain: `%s`" % t)
            for t in sorted(set(s["failing"]) - set(p["failing"])):
                print("  - fails only SHARE: `%s`" % t)
            for k, x in r["extra"].items():
                print("  - re-run %s: %s" % (k[:-1], short(x)))
            print("  - logs: %s, %s" % (p["log"], s["log"]))
    for p in problems:
        print("- ERROR: %s" % p)
    differs = [n for n, v in verdicts.items() if v == "DIFFERS"]
    flaky = [n for n, v in verdicts.items() if v.startswith("flaky")]

    def tot(mode, what):
        return sum(r[mode]["counts"].get(what, 0) for r in rows)
    summary = ("Summary: Python %s: %d packages; plain: %d passed, %d failed, %d skipped; "
               "SHARE: %d passed, %d failed, %d skipped; %d same, %d flaky, %d differ; "
               "total %s." % (info["version"], len(rows),
                              tot("plain", "passed"),
                              tot("plain", "failed") + tot("plain", "errors"),
                              tot("plain", "skipped"), tot("share", "passed"),
                              tot("share", "failed") + tot("share", "errors"),
                              tot("share", "skipped"),
                              len(rows) - len(differs) - len(flaky), len(flaky), len(differs),
                              suitelib.fmt_secs(total)))
    print()
    print(summary)
    if ns.json:
        with open(ns.json, "w", encoding="utf-8") as f:
            json.dump({"info": info, "rows": rows, "summary": summary, "total_seconds": total,
                       "scratch": scratch}, f, indent=1)
    if ns.keep or differs or flaky or problems:
        log("scratch kept: %s" % scratch)
    else:
        shutil.rmtree(scratch, ignore_errors=True)
    return 1 if differs or problems else 0


if __name__ == "__main__":
    sys.exit(main())
