"""Environments pycds must refuse cleanly or survive: ``-X no_debug_ranges`` mismatches,
sub-interpreters, embedding with ``Py_Finalize`` + ``Py_Initialize``, debug builds and
free-threaded builds. Each case either works or falls back with one clear warning line;
none may crash.

Run (the driver itself can be any Python 3.8+)::

    python3 compat/environments.py --python /tmp/robust-venvs/3.12/bin/python \\
        [--debug-python /tmp/robust-venvs/3.11-dbg/bin/python] \\
        [--freethreaded-python PY] [--json FILE]

``--python`` is a release interpreter with pycds installed, in a virtual environment (the
embedding test points the embedded interpreter at it so that its site-packages and
``pycds.pth`` are used). ``--debug-python`` is a debug build with pycds installed (see
``compat/README.md`` for how it is built from Debian's ``python3.11-dbg``); without it the
debug rows say "not tested". No free-threaded interpreter can be installed on this
machine; ``--freethreaded-python`` runs the same checks on one if you have it.

Checks:

1. ``-X no_debug_ranges``: archives dumped without and with the flag, used without and
   with it (also through ``PYTHONNODEBUGRANGES=1``). The program prints a traceback (with
   or without ``^^^^`` markers) and compares the position tables (``co_positions``,
   ``co_linetable``, ``co_exceptiontable``) of every code object of several modules with a
   fresh ``compile()`` of their source under the same flag. Output must equal the plain run
   with the same flag; a mismatched archive must be refused (one warning) or give equal
   tables.
2. Sub-interpreters (``_xxsubinterpreters`` 3.11/3.12, ``_interpreters`` 3.13), isolated
   and legacy: with SHARE in the main interpreter, a sub-interpreter imports archived
   modules and runs them; the main interpreter keeps being served.
3. Embedding: a C program (built with ``python3.X-config --embed``) initialises the
   interpreter 3 times in one process (``Py_InitializeFromConfig`` / ``Py_FinalizeEx``)
   with ``PYCDSMODE=SHARE``, running the test program each time.
4. Debug build: TRACE, DUMP, SHARE (with a release archive) and AUTO under the debug
   interpreter.
5. Free-threaded build: the same, when an interpreter is given.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import robustlib as R  # noqa: E402

POSITIONS_PROG = '''\
"""Compare the position tables of loaded modules with a fresh compile of their source."""
import sys
import types
import traceback

import helpers
import json
import argparse
import email.message
import textwrap


def codes(co):
    yield co
    for c in co.co_consts:
        if isinstance(c, types.CodeType):
            yield from codes(c)


def tables(co):
    return [(c.co_qualname, list(c.co_positions()), c.co_linetable, c.co_exceptiontable,
             c.co_firstlineno) for c in codes(co)]


for mod in (helpers, json, argparse, email.message, textwrap):
    with open(mod.__file__, "rb") as f:
        fresh = compile(f.read(), mod.__file__, "exec", dont_inherit=True)
    # The module's own code object is gone after execution; compare its functions.
    loaded = []
    for v in vars(mod).values():
        if isinstance(v, types.FunctionType) and v.__module__ == mod.__name__:
            loaded.append(v.__code__)
    fresh_by_name = {}
    for c in codes(fresh):
        fresh_by_name.setdefault((c.co_qualname, c.co_firstlineno), c)
    same = total = 0
    for co in loaded:
        ref = fresh_by_name.get((co.co_qualname, co.co_firstlineno))
        total += 1
        if ref is not None and tables(co) == tables(ref):
            same += 1
    print("%s: %d/%d functions with identical position tables" % (mod.__name__, same, total))
try:
    helpers.fail("x")
except KeyError:
    print(traceback.format_exc().strip())
'''

SUBINTERP_PROG = '''\
"""Sub-interpreters import archived modules while the main interpreter uses the archive.
(No decimal, calendar or email here: importing them in two isolated sub-interpreters aborts
CPython 3.12.1 itself, "double free or corruption", with or without pycds.)"""
import os
import sys
import json
try:
    import _interpreters as I
except ImportError:
    import _xxsubinterpreters as I

CODE = """
import os, sys
import argparse, html, shlex, textwrap, difflib
parts = [
    "sub %s",
    html.escape("<&>") + shlex.quote("a b"),
    textwrap.shorten("the quick brown fox jumps", 15),
    "".join(difflib.ndiff(["a"], ["b"])).replace(chr(10), "|"),
    str(vars(argparse.ArgumentParser(prog="s").parse_args([]))),
]
os.write(%d, (" / ".join(parts) + chr(10)).encode())
h = sys.modules.get("pycds._hook")
os.write(2, ("sub-interpreter pycds state: %%s%%s" %% (
    h and h._state.get("mode"), chr(10))).encode())
"""

kind = sys.argv[1]
r, w = os.pipe()
print("main before", json.dumps({"k": [1, 2]}))
for i in range(2):
    if kind == "legacy":
        try:
            iid = I.create("legacy")
        except TypeError:
            iid = I.create(isolated=False)
    else:
        iid = I.create()
    res = I.run_string(iid, CODE % (i, w))
    if res is not None:
        print("sub-interpreter error:", res)
    I.destroy(iid)
    print("sub", i, os.read(r, 65536).decode().strip())
import fractions, statistics
print("main after", fractions.Fraction(1, 3) + 1, statistics.median([1, 5, 3]))
'''

EMBED_C = r'''
#include <Python.h>
#include <stdio.h>

/* Initialise, run the program, finalise: several times in one process. */
static int round_trip(const char *program, const char *code, int round)
{
    PyConfig config;
    PyConfig_InitPythonConfig(&config);
    PyStatus st = PyConfig_SetBytesString(&config, &config.program_name, program);
    if (PyStatus_Exception(st)) {
        fprintf(stderr, "embed: config failed\n");
        return 1;
    }
    st = Py_InitializeFromConfig(&config);
    PyConfig_Clear(&config);
    if (PyStatus_Exception(st)) {
        fprintf(stderr, "embed: init failed in round %d\n", round);
        return 1;
    }
    printf("round %d\n", round);
    fflush(stdout);
    int rc = PyRun_SimpleString(code);
    fflush(stdout);
    if (Py_FinalizeEx() < 0) {
        fprintf(stderr, "embed: finalize failed in round %d\n", round);
        return 1;
    }
    return rc;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: embed PYTHON CODE ROUNDS\n");
        return 2;
    }
    int rounds = atoi(argv[3]);
    for (int i = 1; i <= rounds; i++) {
        if (round_trip(argv[1], argv[2], i) != 0) {
            fprintf(stderr, "embed: round %d failed\n", i);
            return 1;
        }
    }
    return 0;
}
'''

EMBED_CODE = '''\
import sys
sys.path.insert(0, %(proj)r)
%(probes)s
import embmod
print(embmod.greet("embedded"), [use(n) for n in %(mods)r])
h = sys.modules.get("pycds._hook")
sys.stderr.write("embed-stats: mode=%%s served=%%d\\n" %% (
    h and h._state["mode"], len(h._state["served"]) if h else 0))
'''

EMBMOD = '''\
"""A project module imported by the embedded interpreter."""
import textwrap


def greet(who):
    return textwrap.shorten("hello %s from a project module" % who, 30)
'''


class Checker:
    def __init__(self, work):
        self.work = work
        self.rows = []

    def add(self, env, check, outcome, ok, detail=""):
        self.rows.append({"environment": env, "check": check, "outcome": outcome,
                          "ok": ok, "detail": detail})
        print("  [%s] %s / %s: %s" % ({True: "ok", False: "FAIL", None: "--"}[ok], env, check,
                                     outcome))
        if detail and ok is False:
            print("      " + detail[-1500:].replace("\n", "\n      "))
        sys.stdout.flush()


def prepare_app(work, python, name, dump_flags=(), env=None):
    d = os.path.join(work, name)
    os.makedirs(d)
    app = os.path.join(d, "app")
    main = R.write_app(app)
    prog = os.path.join(app, "positions.py")
    with open(prog, "w", encoding="utf-8") as f:
        f.write(POSITIONS_PROG)
    archive, lst = os.path.join(d, "app.img"), os.path.join(d, "app.lst")
    R.trace_and_dump(python, list(dump_flags) + [main], lst, archive, cwd=app, env_extra=env)
    R.trace_and_dump(python, list(dump_flags) + [prog], lst, archive, cwd=app, env_extra=env)
    return app, main, prog, archive


def summarize(res):
    lines = R.pycds_lines(res.err)
    return "%d served, %d warning(s)%s" % (
        len(lines.served), len(lines.warnings),
        (": " + lines.warnings[0]) if lines.warnings else "")


def check_debug_ranges(ck, python):
    env_name = "%s -X no_debug_ranges" % R.interpreter_version(python)
    built = {}
    for label, flags, env in (("dumped without the flag", (), None),
                              ("dumped with -X no_debug_ranges", ("-X", "no_debug_ranges"),
                               None)):
        built[label] = prepare_app(ck.work, python, "ranges-%d" % len(built), flags, env)
    runs = [("run without the flag", [], {}),
            ("run with -X no_debug_ranges", ["-X", "no_debug_ranges"], {}),
            ("run with PYTHONNODEBUGRANGES=1", [], {"PYTHONNODEBUGRANGES": "1"})]
    for label, (app, main, prog, archive) in built.items():
        for rlabel, flags, env in runs:
            for p in (main, prog):
                plain = R.run([python] + flags + [p], env=R.base_env(**env), cwd=app)
                share = R.run([python] + flags + [p], env=R.base_env(
                    PYCDSMODE="SHARE", PYCDSARCHIVE=archive, PYCDSVERBOSE="2", **env), cwd=app)
                lines = R.pycds_lines(share.err)
                crash = R.crash_reason(share)
                same = share.out == plain.out and share.rc == plain.rc
                matched = ("with" in label and "without" not in label) == \
                    (rlabel != "run without the flag")
                ok = not crash and same and len(lines.warnings) <= 1
                if matched and (lines.warnings or not lines.served):
                    ok = False  # a matching archive must be used
                outcome = "%s; output %s" % (summarize(share), "= plain" if same else "DIFFERS")
                ck.add(env_name, "%s, %s (%s)" % (label, rlabel, os.path.basename(p)), outcome,
                       ok, "" if ok else first_diff(plain.out, share.out) + "\n" + share.err[-800:])


def first_diff(a, b):
    for x, y in zip(a.splitlines(), b.splitlines()):
        if x != y:
            return "plain: %r / share: %r" % (x, y)
    return "lengths %d / %d" % (len(a), len(b))


def check_subinterpreters(ck, python):
    ver = R.interpreter_version(python)
    env_name = "%s sub-interpreters" % ver
    has = R.run([python, "-c", "try:\n import _interpreters\nexcept ImportError:\n"
                 " import _xxsubinterpreters"], timeout=60)
    if has.rc != 0:
        ck.add(env_name, "available", "no _interpreters/_xxsubinterpreters module", None)
        return
    app, main, prog, archive = prepare_app(ck.work, python, "subinterp")
    sp = os.path.join(app, "subinterp.py")
    with open(sp, "w", encoding="utf-8") as f:
        f.write(SUBINTERP_PROG)
    lst = os.path.join(app, "..", "sub.lst")
    sub_archive = os.path.join(app, "..", "sub.img")
    # Trace in the main interpreter the modules the sub-interpreter will import.
    R.run([python, "-c", "import argparse, html, shlex, textwrap, difflib, "
           "fractions, statistics, json"], env=R.base_env(PYCDSMODE="TRACE", PYCDSLIST=lst),
          cwd=app, timeout=60)
    # DUMP without the program: in DUMP mode the sub-interpreters would each warn that
    # they cannot dump (3.11 runs pycds in them).
    R.run([python, sp, "isolated"], env=R.base_env(PYCDSMODE="TRACE", PYCDSLIST=lst), cwd=app,
          timeout=120)
    d = R.run([python, "-c", "pass"], env=R.base_env(PYCDSMODE="DUMP", PYCDSLIST=lst,
                                                     PYCDSARCHIVE=sub_archive), cwd=app,
              timeout=120)
    if not os.path.exists(sub_archive):
        ck.add(env_name, "dump", "DUMP failed", False, d.err[-1500:])
        return
    for kind in ("isolated", "legacy"):
        plain = R.run([python, sp, kind], env=R.base_env(), cwd=app, timeout=120)
        share = R.run([python, sp, kind], env=R.base_env(PYCDSMODE="SHARE",
                                                         PYCDSARCHIVE=sub_archive,
                                                         PYCDSVERBOSE="2"), cwd=app,
                      timeout=120)
        lines = R.pycds_lines(share.err)
        crash = R.crash_reason(share)
        same = share.out == plain.out and share.rc == plain.rc
        main_served = {"fractions", "statistics"} <= set(lines.served)
        ok = not crash and same and main_served and plain.rc == 0 and len(lines.warnings) <= 2
        outcome = "%s; output %s; main interpreter served after: %s" % (
            summarize(share), "= plain" if same else "DIFFERS", main_served)
        if plain.rc != 0:
            outcome = "plain run fails: " + plain.err.strip().splitlines()[-1]
        ck.add(env_name, "%s sub-interpreter imports archived modules" % kind, outcome, ok,
               "" if ok else first_diff(plain.out, share.out) + "\n" + share.err[-1500:])
        states = [ln.split(": ", 1)[1] for ln in share.err.splitlines()
                  if ln.startswith("sub-interpreter pycds state")]
        noise = [ln for ln in share.err.splitlines()
                 if ln.startswith("Error processing line") or ln.startswith("  ImportError")]
        n_blocks = sum(1 for ln in noise if ln.startswith("Error processing line"))
        ck.add(env_name, "%s: messages from the sub-interpreters" % kind,
               "pycds mode in them: %s; %s" % (
                   "/".join(states) or "-",
                   "%d 'Error processing line 1 of pycds.pth' traceback blocks (%s) "
                   "(BUG-E1)" % (n_blocks, noise[-1].strip()) if noise
                   else "%d one-line warning(s)" % len(lines.warnings)),
               False if noise else True)


def check_embedding(ck, python):
    ver = R.interpreter_version(python)
    env_name = "%s embedded" % ver
    info = json.loads(R.run([python, "-c", "import json, sys, sysconfig; print(json.dumps("
                             "[sys.base_prefix, '%d.%d' % sys.version_info[:2], "
                             "sysconfig.get_config_var('LINKFORSHARED') or '']))"],
                            timeout=60).out)
    base, short, linkforshared = info
    config = os.path.join(base, "bin", "python%s-config" % short)
    if not os.path.exists(config):
        ck.add(env_name, "build", "no %s" % config, None)
        return
    d = os.path.join(ck.work, "embed")
    os.makedirs(d)
    src, exe = os.path.join(d, "embed.c"), os.path.join(d, "embed")
    with open(src, "w") as f:
        f.write(EMBED_C)
    cflags = subprocess.run([config, "--cflags"], capture_output=True, text=True).stdout.split()
    ldflags = subprocess.run([config, "--embed", "--ldflags"], capture_output=True,
                             text=True).stdout.split()
    libdir = os.path.join(base, "lib")
    cmd = ["gcc", "-o", exe, src] + cflags + ldflags + linkforshared.split() + \
        ["-Wl,-rpath," + libdir]
    b = subprocess.run(cmd, capture_output=True, text=True)
    if b.returncode != 0:
        ck.add(env_name, "build", "gcc failed", False, " ".join(cmd) + "\n" + b.stderr)
        return
    proj = os.path.join(d, "proj")
    os.makedirs(proj)
    with open(os.path.join(proj, "embmod.py"), "w") as f:
        f.write(EMBMOD)
    venv_python = os.path.abspath(python)
    rounds = "3"
    # Some stdlib C extensions do not survive Py_FinalizeEx + Py_Initialize in CPython
    # itself (3.12.1: _decimal and _datetime abort with "double free or corruption",
    # binascii.b2a_base64(..., newline=False) segfaults in the second round): keep the
    # probed modules whose probe survives 3 rounds without pycds.
    mods, broken = [], []
    for name in R.PROBED_MODULES:
        r = R.run([exe, venv_python, R.PROBES + "\nuse(%r)\n" % name, rounds],
                  env=R.base_env(), cwd=proj, timeout=60)
        (mods if r.rc == 0 else broken).append(name)
    if broken:
        ck.add(env_name, "plain CPython, 3 rounds (no pycds)",
               "crashes when using %s; left out" % ", ".join(broken), None)
    code = EMBED_CODE % {"proj": proj, "probes": R.PROBES, "mods": mods}
    lst, archive = os.path.join(d, "embed.lst"), os.path.join(d, "embed.img")
    R.run([python, "-c", code], env=R.base_env(PYCDSMODE="TRACE", PYCDSLIST=lst), cwd=proj,
          timeout=120)
    R.run([python, "-c", "pass"], env=R.base_env(PYCDSMODE="DUMP", PYCDSLIST=lst,
                                                 PYCDSARCHIVE=archive), cwd=proj, timeout=120)
    plain = R.run([exe, venv_python, code, rounds], env=R.base_env(), cwd=proj, timeout=120)
    share = R.run([exe, venv_python, code, rounds], env=R.base_env(
        PYCDSMODE="SHARE", PYCDSARCHIVE=archive, PYCDSVERBOSE="1"), cwd=proj, timeout=120)
    crash = R.crash_reason(share)
    stats = [ln for ln in share.err.splitlines() if ln.startswith("embed-stats")]
    same = share.out == plain.out and share.rc == plain.rc
    lines = R.pycds_lines(share.err)
    ok = not crash and same and plain.rc == 0 and len(lines.warnings) <= 3
    outcome = "exit %s, output %s, %d warning line(s); per round: %s" % (
        share.rc, "= plain" if same else "DIFFERS", len(lines.warnings),
        ", ".join(s.split(": ", 1)[1] for s in stats) or "-")
    if crash:
        outcome = "CRASH (%s) after %d round(s)" % (crash, len(stats))
    ck.add(env_name, "3 x Py_InitializeFromConfig / Py_FinalizeEx, SHARE, %d modules" % len(mods),
           outcome, ok,
           "" if ok else "plain rc %s: %s\nshare stderr: %s" % (plain.rc, plain.err[-500:],
                                                                share.err[-1500:]))
    for w in lines.warnings:
        ck.add(env_name, "warning", w, None)


def check_refused_build(ck, python, kind, release_python):
    """TRACE, DUMP, SHARE (with a release archive), AUTO under a build pycds refuses."""
    ver = R.interpreter_version(python)
    env_name = "%s %s" % (ver, kind)
    imp = R.run([python, "-c", "import sys, pycds; print(sys.abiflags); "
                 "print(pycds.check_interpreter())"], env=R.base_env(), timeout=120)
    ck.add(env_name, "import pycds; pycds.check_interpreter()",
           (imp.out + imp.err).strip().splitlines()[-1] if (imp.out + imp.err).strip()
           else "rc %s" % imp.rc, None)
    d = os.path.join(ck.work, "refused-" + kind.replace(" ", "-"))
    os.makedirs(d)
    app = os.path.join(d, "app")
    main = R.write_app(app)
    plain = R.run([python, main], env=R.base_env(), cwd=app, timeout=300)
    lst, archive = os.path.join(d, "app.lst"), os.path.join(d, "app.img")
    release_archive = os.path.join(d, "release.img")
    if release_python:
        R.trace_and_dump(release_python, [main], os.path.join(d, "rel.lst"), release_archive,
                         cwd=app)
    steps = [("TRACE", {"PYCDSMODE": "TRACE", "PYCDSLIST": lst}),
             ("DUMP", {"PYCDSMODE": "DUMP", "PYCDSLIST": lst, "PYCDSARCHIVE": archive}),
             ("SHARE with a release-build archive",
              {"PYCDSMODE": "SHARE", "PYCDSARCHIVE": release_archive}),
             ("AUTO (no archive yet)", {"PYCDSMODE": "AUTO",
                                        "PYCDSARCHIVE": os.path.join(d, "auto.img")})]
    for label, env in steps:
        if "release" in label and not release_python:
            continue
        res = R.run([python, main], env=R.base_env(PYCDSVERBOSE="2", **env), cwd=app,
                    timeout=300)
        crash = R.crash_reason(res)
        lines = R.pycds_lines(res.err)
        same = res.out == plain.out and res.rc == plain.rc
        ok = not crash and same and plain.rc == 0 and len(lines.warnings) <= 1
        if label != "TRACE" and len(lines.warnings) != 1:
            ok = False
        extra = ""
        if label == "TRACE":
            extra = "; list has %d modules" % (len(open(lst).read().split())
                                              if os.path.exists(lst) else 0)
        if label == "DUMP":
            extra = "; archive written: %s" % os.path.exists(archive)
        if label.startswith("AUTO"):
            extra = "; archive written: %s" % os.path.exists(os.path.join(d, "auto.img"))
        outcome = "%s%s; output %s" % (summarize(res), extra, "= plain" if same else "DIFFERS")
        if crash:
            outcome = "CRASH: " + crash
        ck.add(env_name, label, outcome, ok, "" if ok else res.err[-1500:])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", required=True)
    ap.add_argument("--debug-python", default=None)
    ap.add_argument("--freethreaded-python", default=None)
    ap.add_argument("--release-python", default=None,
                    help="release interpreter of the debug build's version, whose archive the "
                         "debug build must refuse (default: --python if it is 3.11)")
    ap.add_argument("--skip", action="append", default=[],  # ranges, subinterp, embed, debug
                    help="skip a part: ranges, subinterp, embed, debug")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    t0 = time.monotonic()
    work = tempfile.mkdtemp(prefix="pycds-environments-", dir=args.workdir)
    ck = Checker(work)
    print("python: %s (%s); work directory %s" % (args.python,
                                                  R.interpreter_version(args.python), work))
    if "ranges" not in args.skip:
        check_debug_ranges(ck, args.python)
    if "subinterp" not in args.skip:
        check_subinterpreters(ck, args.python)
    if "embed" not in args.skip:
        check_embedding(ck, args.python)
    if "debug" not in args.skip:
        if args.debug_python:
            release = args.release_python
            if release is None and R.interpreter_version(args.python).startswith("3.11."):
                release = args.python
            check_refused_build(ck, args.debug_python, "debug build", release)
        else:
            ck.add("debug build", "-", "not tested (no --debug-python)", None)
    if args.freethreaded_python:
        check_refused_build(ck, args.freethreaded_python, "free-threaded", None)
    else:
        ck.add("free-threaded", "-", "not tested: no free-threaded interpreter on this machine "
               "(pycds's probe refuses abiflags containing 't')", None)
    print()
    print(R.table([[r["environment"], r["check"], r["outcome"],
                    {True: "ok", False: "FAIL", None: "-"}[r["ok"]]] for r in ck.rows],
                  ["environment", "check", "outcome", "verdict"]))
    bad = [r for r in ck.rows if r["ok"] is False]
    print()
    print("%d checks, %d failed; wall time %.0f s" % (len(ck.rows), len(bad),
                                                      time.monotonic() - t0))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(ck.rows, f, indent=1)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
