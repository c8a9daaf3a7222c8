"""CPython's own regression tests, run plain and with their modules served by pycds.

Usage (stdlib only; the interpreter given must have the pycds wheel installed):

    python3 compat/regrtest.py --python /path/to/venv/bin/python            # full selection
    python3 compat/regrtest.py --python /path/to/venv/bin/python --quick    # CI subset
    python3 compat/regrtest.py --python ... --tests test_json test_re       # your own list

For each selected test module (``python -m test TEST -v``, one process per test module,
sequential, never ``-j``):

1. TRACE: the test module runs with PYCDSMODE=TRACE; every process (children included)
   appends the modules it imported to one list;
2. DUMP: one PYCDSMODE=DUMP process writes the archive from that list;
3. plain: the test module runs with no PYCDS* variable;
4. SHARE: the test module runs with PYCDSMODE=SHARE (children inherit it).

All runs use the same launcher (``python -c LAUNCHER``, equivalent to ``python -m test``)
which writes ``pycds.stats()`` to a file at exit: that is how the modules served in the
SHARE run are counted, without PYCDSVERBOSE (whose stderr lines would break tests that
check a child's stderr). Results are compared per test module: regrtest's result, tests
run, skipped, and the set of failing test cases (``FAIL:`` / ``ERROR:`` lines). A module
whose results differ is run again plain and SHARE to tell flaky tests from real
differences.

Differences whose cause is understood and that are not wrong results of served code are
listed in KNOWN_DIFFS below (test module, test method, cause; see compat/README.md): a
module that differs only by those gets the verdict "known".

Prints a markdown table and a summary line; exits 1 when a SHARE result differs from
plain reproducibly (other than KNOWN_DIFFS), 2 when the SHARE runs served no module.
``--quick`` (9 fast modules, about 1 minute per interpreter here) is the CI subset. Scratch files go to a
temporary directory (``--keep`` keeps it; ``--json FILE`` saves the results).
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import suitelib  # noqa: E402

# The full selection. Names are regrtest names: a test may be a module (test_x.py) in one
# version and a package (test_x/) in another; regrtest accepts the name for both.
FULL = """
test_json test_email test_asyncio test_unittest test_re test_collections test_importlib
test_inspect test_traceback test_dis test_typing test_dataclasses test_pickle test_logging
test_argparse test_httplib test_httpservers test_xml_etree test_sqlite3 test_csv
test_pathlib test_zipfile test_tarfile test_subprocess test_concurrent_futures
test_decimal test_fractions test_statistics test_string test_textwrap test_functools
test_itertools test_contextlib test_enum test_tomllib test_uuid test_random test_weakref
test_gc test_sys_settrace test_monitoring
test_runpy test_pkgutil test_zipimport test_linecache test_warnings test_ast test_pydoc
test_site test_cmd_line_script test_datetime test_shutil test_tempfile test_copy
test_configparser
""".split()

# The CI subset: fast modules that exercise code objects, source lookup and imports.
QUICK = """
test_json test_re test_dis test_inspect test_traceback test_importlib test_typing
test_dataclasses test_tomllib
""".split()

# Differences explained and documented in compat/README.md ((test module, method) -> cause).
# A module whose only differences are these gets the verdict "known" and does not make
# the script fail; anything else that differs reproducibly does. Empty: the three found
# (test_traceback's -X no_debug_ranges children, test_subprocess's descriptor numbers,
# test_pydoc's loader comparison) were fixed in pycds; see compat/README.md.
KNOWN_DIFFS = {}

TEST_TIMEOUT = 600  # regrtest --timeout (per test case, faulthandler)
PROC_TIMEOUT = 1200  # whole test module process


def test_dir(python):
    out = subprocess.run([python, "-c", "import os, test; print(os.path.dirname(test.__file__))"],
                         env=suitelib.clean_env(), capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise SystemExit("%s has no 'test' package:\n%s" % (python, out.stderr))
    return out.stdout.strip()


def resolve(names, tdir):
    """(present, missing): a name is present as test_x.py or as a test_x/ package."""
    present, missing = [], []
    for name in names:
        if os.path.isfile(os.path.join(tdir, name + ".py")) or \
                os.path.isfile(os.path.join(tdir, name, "__init__.py")):
            present.append(name)
        else:
            missing.append(name)
    return present, missing


_SEP = "=" * 70
_CASE = re.compile(r"^(FAIL|ERROR|UNEXPECTED SUCCESS): (.+)$")


def parse(out, rc):
    """Summarise one ``python -m test TEST -v`` run."""
    res = {"rc": rc, "result": None, "run": None, "failures": 0, "skipped": 0,
           "failing": []}
    lines = out.splitlines()
    failing = set()
    for i, line in enumerate(lines):
        if line.startswith("Result: "):
            res["result"] = line[len("Result: "):].strip()
        elif line.startswith("Total tests: "):
            for item in line[len("Total tests: "):].split():
                k, _, v = item.partition("=")
                v = int(v.replace(",", ""))
                if k == "run":
                    res["run"] = v
                elif k == "failures":
                    res["failures"] = v
                elif k == "skipped":
                    res["skipped"] = v
        else:
            m = _CASE.match(line)
            if m and i and lines[i - 1] == _SEP:
                failing.add("%s: %s" % (m.group(1), m.group(2)))
    res["failing"] = sorted(failing)
    if rc == "TIMEOUT":
        res["result"] = "TIMEOUT"
    elif res["result"] is None:
        res["result"] = "CRASHED (rc=%s)" % rc
    return res


def key(res):
    """What must be equal between plain and SHARE."""
    return (res["result"], res["run"], res["skipped"], tuple(res["failing"]))


def short(res):
    if res["run"] is None:
        return res["result"]
    bad = len(res["failing"])
    passed = res["run"] - bad - res["skipped"]
    word = {"SUCCESS": "ok", "FAILURE": "FAIL", "ENV CHANGED": "env changed",
            "NO TESTS RAN": "no tests"}.get(res["result"], res["result"])
    return "%s: %d pass, %d fail, %d skip" % (word, passed, bad, res["skipped"])


def case_method(case):
    """``FAIL: test_x (test.mod.Class.test_x)`` -> ``test_x``."""
    return case.split(": ", 1)[1].split(" ", 1)[0]


def explained(test, p, s):
    """Whether every difference between plain ``p`` and SHARE ``s`` is in KNOWN_DIFFS."""
    if p["run"] != s["run"] or p["skipped"] != s["skipped"]:
        return False
    diff = set(p["failing"]) ^ set(s["failing"])
    return bool(diff) and all((test, case_method(c)) in KNOWN_DIFFS for c in diff)


class Runner:
    def __init__(self, python, scratch, verbose):
        self.python = python
        self.scratch = scratch
        self.lst = os.path.join(scratch, "modules.lst")
        self.archive = os.path.join(scratch, "archive.img")
        self.verbose = verbose
        self.n = 0

    def run_test(self, mode, test):
        self.n += 1
        cwd = os.path.join(self.scratch, "cwd")
        os.makedirs(cwd, exist_ok=True)
        tag = "%03d-%s-%s" % (self.n, mode, test)
        stats_path = os.path.join(self.scratch, "logs", tag + ".stats")
        log_path = os.path.join(self.scratch, "logs", tag + ".log")
        args = [test, "-v", "--timeout", str(TEST_TIMEOUT)]
        cmd = suitelib.launcher_cmd(self.python, stats_path, "test", args)
        env = suitelib.mode_env(mode, self.lst, self.archive)
        rc, out, secs = suitelib.run(cmd, env, cwd, PROC_TIMEOUT, log_path)
        res = parse(out, rc)
        res["seconds"] = round(secs, 1)
        res["log"] = log_path
        stats = suitelib.read_stats(stats_path)
        res["served"] = len(set(stats["served"])) if stats else None
        res["served_imports"] = len(stats["served"]) if stats else None
        res["fallbacks"] = len(stats["fallbacks"]) if stats else None
        res["served_names"] = sorted(stats["served"]) if stats else []
        res["stats_mode"] = stats["mode"] if stats else None
        if self.verbose:
            print("  %-8s %-26s %-44s %6.1fs%s" % (
                mode, test, short(res), secs,
                "  served %s" % res["served"] if mode == "share" else ""),
                file=sys.stderr, flush=True)
        return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", required=True,
                    help="interpreter (of a venv) that has pycds installed")
    ap.add_argument("--tests", nargs="+", help="regrtest names (default: the full selection)")
    ap.add_argument("--quick", action="store_true", help="the CI subset: %s" % " ".join(QUICK))
    ap.add_argument("--no-recheck", action="store_true",
                    help="do not re-run modules whose results differ")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    ap.add_argument("--json", help="write all results to this JSON file")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    ns = ap.parse_args(argv)

    t_start = time.monotonic()
    python = ns.python
    if os.sep in python:
        python = os.path.abspath(python)
    info = suitelib.python_info(python)
    names = ns.tests or (QUICK if ns.quick else FULL)
    tests, missing = resolve(names, test_dir(python))
    if not tests:
        raise SystemExit("none of the tests exist for %s" % python)
    scratch = tempfile.mkdtemp(prefix="pycds-regrtest-")
    os.makedirs(os.path.join(scratch, "logs"))
    log = (lambda *a: None) if ns.quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))
    log("pycds regrtest: Python %s, pycds %s, %d test modules, scratch %s"
        % (info["version"], info["pycds"], len(tests), scratch))
    if missing:
        log("not in this interpreter's test package: %s" % " ".join(missing))
    r = Runner(python, scratch, not ns.quiet)
    results = {t: {} for t in tests}
    phase_secs = {}

    try:
        t0 = time.monotonic()
        log("== TRACE")
        for t in tests:
            results[t]["trace"] = r.run_test("trace", t)
        phase_secs["trace"] = time.monotonic() - t0

        t0 = time.monotonic()
        n_mod, n_bytes, _ = suitelib.dump(python, r.lst, r.archive, scratch)
        phase_secs["dump"] = time.monotonic() - t0
        with open(r.lst, encoding="utf-8") as f:
            n_listed = len(set(f.read().split()))
        log("== DUMP: %d modules listed, %d archived, %d bytes" % (n_listed, n_mod, n_bytes))

        for mode in ("plain", "share"):
            t0 = time.monotonic()
            log("== %s" % mode.upper())
            for t in tests:
                results[t][mode] = r.run_test(mode, t)
            phase_secs[mode] = time.monotonic() - t0

        # Re-run what differs, plain and SHARE, to separate flaky tests from real differences.
        t0 = time.monotonic()
        verdicts = {}
        for t in tests:
            p, s = results[t]["plain"], results[t]["share"]
            if key(p) == key(s):
                verdicts[t] = "same"
                continue
            if ns.no_recheck:
                verdicts[t] = "DIFFERS"
                continue
            log("== RECHECK %s" % t)
            p2 = results[t]["plain2"] = r.run_test("plain", t)
            s2 = results[t]["share2"] = r.run_test("share", t)
            if key(p2) != key(p):
                verdicts[t] = "flaky (plain differs between runs)"
            elif key(s2) == key(p):
                verdicts[t] = "flaky (SHARE difference did not reproduce)"
            else:
                verdicts[t] = "DIFFERS"
            if verdicts[t] == "DIFFERS" and explained(t, p, s):
                verdicts[t] = "known (see KNOWN_DIFFS)"
        phase_secs["recheck"] = time.monotonic() - t0
    except BaseException:
        log("interrupted; scratch kept: %s" % scratch)
        raise
    total_secs = time.monotonic() - t_start

    # -- report ------------------------------------------------------------------------
    served_union = set()
    for t in tests:
        served_union.update(results[t]["share"]["served_names"])
    print("### pycds regrtest: Python %s (%s), pycds %s\n"
          % (info["version"], python, info["pycds"]))
    print("Archive: %d modules (%d listed by TRACE), %.1f MB.\n"
          % (n_mod, n_listed, n_bytes / 1e6))
    print("| test module | plain | SHARE | tests run (plain / SHARE) | modules served | "
          "plain s | SHARE s | verdict |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    totals = {"plain": [0, 0, 0, 0], "share": [0, 0, 0, 0]}  # run, pass, fail, skip
    for t in tests:
        p, s = results[t]["plain"], results[t]["share"]
        for mode, x in (("plain", p), ("share", s)):
            if x["run"] is not None:
                bad = len(x["failing"])
                totals[mode][0] += x["run"]
                totals[mode][1] += x["run"] - bad - x["skipped"]
                totals[mode][2] += bad
                totals[mode][3] += x["skipped"]
        print("| %s | %s | %s | %s / %s | %s | %.0f | %.0f | %s |" % (
            t, short(p), short(s), p["run"], s["run"], s["served"], p["seconds"],
            s["seconds"], verdicts[t]))
    for t in missing:
        print("| %s | not in this build | | | | | | |" % t)
    differs = [t for t in tests if verdicts[t] == "DIFFERS"]
    flaky = [t for t in tests if verdicts[t].startswith("flaky")]
    known = [t for t in tests if verdicts[t].startswith("known")]
    print()
    for t in tests:
        if verdicts[t] == "same":
            continue
        p, s = results[t]["plain"], results[t]["share"]
        print("- **%s** (%s):" % (t, verdicts[t]))
        if True:
            only_p = sorted(set(p["failing"]) - set(s["failing"]))
            only_s = sorted(set(s["failing"]) - set(p["failing"]))
            if p["result"] != s["result"]:
                print("  - result: plain %s, SHARE %s" % (p["result"], s["result"]))
            if p["run"] != s["run"] or p["skipped"] != s["skipped"]:
                print("  - run/skipped: plain %s/%s, SHARE %s/%s"
                      % (p["run"], p["skipped"], s["run"], s["skipped"]))
            for c in only_p:
                print("  - fails only plain: `%s`" % c)
            for c in only_s:
                print("  - fails only SHARE: `%s`" % c)
                if (t, case_method(c)) in KNOWN_DIFFS:
                    print("    - known: %s" % KNOWN_DIFFS[(t, case_method(c))])
            for extra in ("plain2", "share2"):
                if extra in results[t]:
                    print("  - re-run %s: %s" % (extra[:-1], short(results[t][extra])))
            print("  - logs: %s, %s" % (p["log"], s["log"]))
    print()
    print("Phases: " + ", ".join("%s %s" % (k, suitelib.fmt_secs(v))
                                 for k, v in phase_secs.items()) +
          "; total %s." % suitelib.fmt_secs(total_secs))
    summary = ("Summary: Python %s: %d test modules; plain: %d tests run, %d passed, "
               "%d failed, %d skipped; SHARE: %d tests run, %d passed, %d failed, "
               "%d skipped; %d distinct modules served (%d imports served from the archive); "
               "%d same, %d flaky, %d known differences, %d differ."
               % (info["version"], len(tests), *totals["plain"], *totals["share"],
                  len(served_union),
                  sum(results[t]["share"]["served_imports"] or 0 for t in tests),
                  len(tests) - len(differs) - len(flaky) - len(known), len(flaky), len(known),
                  len(differs)))
    print(summary)

    if ns.json:
        with open(ns.json, "w", encoding="utf-8") as f:
            json.dump({"info": info, "tests": tests, "missing": missing,
                       "archive_modules": n_mod, "listed": n_listed, "archive_bytes": n_bytes,
                       "phase_seconds": phase_secs, "total_seconds": total_secs,
                       "verdicts": verdicts, "results": results, "summary": summary,
                       "scratch": scratch}, f, indent=1)
    if ns.keep or differs or flaky or known:
        log("scratch kept: %s" % scratch)
    else:
        shutil.rmtree(scratch, ignore_errors=True)
    if not served_union:
        print("ERROR: the SHARE runs served no module", file=sys.stderr)
        return 2
    return 1 if differs else 0


if __name__ == "__main__":
    sys.exit(main())
