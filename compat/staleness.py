"""Staleness: after the archive is dumped, sources change, move or get shadowed; pycds must
either serve the archived code correctly or import normally, never run the wrong code.

Run (the interpreter must have pycds installed and live in a virtual environment, which
the venv scenarios copy; the driver itself can be any Python 3.8+)::

    python3 compat/staleness.py --python /tmp/robust-venvs/3.12/bin/python [--json FILE]

Each scenario builds a fresh copy of the test program (``robustlib.write_app``), TRACEs
and DUMPs it, applies one change, then runs the program twice: plainly, with a fresh
``PYTHONPYCACHEPREFIX`` so that the source files themselves are compiled (the truth), and
in ``PYCDSMODE=SHARE PYCDSVERBOSE=2``. A scenario is correct when the SHARE run has the
same stdout, exit status and last stderr line as the truth, and the ``__file__``,
``__spec__.origin`` and ``co_filename`` the program prints for its modules are the real
paths of the files used. The table says, for the program's own modules, whether they were
served or fell back (and why).

pycds validates a source like ``.pyc`` files do (size and mtime, but in nanoseconds where
``.pyc`` uses whole seconds), so an edit that keeps the size and restores the mtime is not
detected; the scenario "same size, mtime restored" documents it and checks that plain
CPython with its ``__pycache__`` is just as stale. Exit status 1 if any other scenario
runs the wrong code.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import robustlib as R  # noqa: E402

APP_MODULES = ("helpers", "mylib", "mylib.report")


class Scenario:
    """One project directory, dumped with the original program, then changed."""

    def __init__(self, ctx, slug):
        self.ctx = ctx
        self.root = os.path.join(ctx.work, slug)
        os.makedirs(self.root)
        self.app = os.path.join(self.root, "app")
        self.main = R.write_app(self.app)
        self.archive = os.path.join(self.root, "app.img")
        self.list = os.path.join(self.root, "app.lst")
        self.python = ctx.python

    def dump(self, args=None, cwd=None, env=None, python=None):
        R.trace_and_dump(python or self.python, args or [self.main], self.list, self.archive,
                         cwd=cwd or self.app, env_extra=env)

    def write(self, rel, text, keep_mtime=False):
        """Write a file. An edit of an existing file gets the old mtime back
        (``keep_mtime``) or the old mtime + 2 s: an edit made after the dump, beyond the
        1-second granularity of ``.pyc`` validation, which would otherwise make the normal
        import itself use a stale ``__pycache__`` entry."""
        path = os.path.join(self.app, rel)
        old = os.stat(path) if os.path.exists(path) else None
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        if old is not None:
            mtime = old.st_mtime_ns if keep_mtime else old.st_mtime_ns + 2 * 10**9
            os.utime(path, ns=(old.st_atime_ns, mtime))
        return path

    def replace_in(self, rel, old, new, keep_mtime=False):
        path = os.path.join(self.app, rel)
        with open(path, encoding="utf-8") as f:
            text = f.read()
        assert old in text, (rel, old)
        return self.write(rel, text.replace(old, new), keep_mtime)


def run_both(ctx, python, args, cwd, env=None, archive=None):
    """``(truth, share)`` results; truth compiles every source afresh."""
    env = dict(env or {})
    prefix = tempfile.mkdtemp(prefix="pycache-", dir=ctx.work)
    truth = R.run([python] + args, env=R.base_env(PYTHONPYCACHEPREFIX=prefix, **env), cwd=cwd,
                  timeout=60)
    share = R.run([python] + args, env=R.base_env(PYCDSMODE="SHARE", PYCDSARCHIVE=archive,
                                                  PYCDSVERBOSE="2", **env), cwd=cwd,
                  timeout=60)
    return truth, share


def last_error(res):
    lines = [ln for ln in res.err.splitlines() if ln.strip() and not ln.startswith("pycds:")]
    return lines[-1] if lines else ""


def check_paths(out, roots):
    """Problems with the ``where`` lines of the program's output: every module's
    ``__file__`` must equal its ``__spec__.origin``, exist, be among its functions'
    ``co_filename`` values, and (for the given module names) lie under the given root."""
    problems = []
    for line in out.splitlines():
        if " file=" not in line or " origin=" not in line:
            continue
        name, rest = line.split(" file=", 1)
        file_, rest = rest.split(" origin=", 1)
        origin, codes = rest.split(" code=", 1)
        codes = json.loads(codes.replace("'", '"'))
        if file_ != origin:
            problems.append("%s: __file__ %s != origin %s" % (name, file_, origin))
        if not os.path.exists(file_):
            problems.append("%s: %s does not exist" % (name, file_))
        if codes and file_ not in codes:
            problems.append("%s: co_filename %s, file %s" % (name, codes, file_))
        root = roots.get(name)
        if root and not file_.startswith(root + os.sep):
            problems.append("%s: %s is not under %s" % (name, file_, root))
    return problems


def describe(share, names):
    lines = R.pycds_lines(share.err)
    served = set(lines.served)
    why = dict(lines.fallbacks)
    out = []
    for n in names:
        if n in served:
            out.append("%s served" % n)
        elif n in why:
            out.append("%s fallback (%s)" % (n, why[n]))
        else:
            out.append("%s normal" % n)
    return out, len(served), lines


def evaluate(ctx, name, change, truth, share, names=APP_MODULES, roots=None, limitation=None,
             extra=None):
    mods, n_served, lines = describe(share, names)
    same = (share.out == truth.out and share.rc == truth.rc
            and last_error(share) == last_error(truth))
    problems = check_paths(share.out, roots or {}) if share.rc == 0 else []
    crash = R.crash_reason(share)
    if crash:
        verdict = "CRASH"
    elif lines.warnings:
        verdict = "WRONG (warning)"
    elif same and not problems:
        verdict = "correct"
    elif limitation:
        verdict = limitation(share, truth)
    else:
        verdict = "WRONG"
    row = {"scenario": name, "change": change, "modules": mods, "served_total": n_served,
           "same_output": same, "path_problems": problems, "verdict": verdict,
           "truth_rc": truth.rc, "share_rc": share.rc, "warnings": lines.warnings,
           "extra": extra}
    if verdict != "correct":
        row["diff"] = first_diff(truth.out, share.out)
        row["share_err"] = share.err[-1500:]
        row["truth_err"] = truth.err[-600:]
    ctx.rows.append(row)
    print("  %-58s %s" % (name, verdict))
    sys.stdout.flush()
    return row


def first_diff(a, b):
    for x, y in zip(a.splitlines(), b.splitlines()):
        if x != y:
            return "truth: %r / share: %r" % (x, y)
    return "lengths %d / %d" % (len(a), len(b))


# -- scenarios ---------------------------------------------------------------------------

def sc_baseline(ctx):
    s = Scenario(ctx, "baseline")
    s.dump()
    t, sh = run_both(ctx, s.python, [s.main], s.app, archive=s.archive)
    evaluate(ctx, "unchanged (reference)", "-", t, sh, roots=app_roots(s))


def app_roots(s):
    return {"helpers": s.app, "mylib": s.app, "mylib.report": s.app}


def sc_edits(ctx):
    cases = [
        ("edit helpers.py, same size", "helpers-v1 -> helpers-v2, mtime + 2 s",
         lambda s: s.replace_in("helpers.py", '"helpers-v1"', '"helpers-v2"')),
        ("edit helpers.py, other size", "helpers-v1 -> helpers-version-2, mtime + 2 s",
         lambda s: s.replace_in("helpers.py", '"helpers-v1"', '"helpers-version-2"')),
        ("edit helpers.py, other size, mtime restored", "size differs, os.utime(old mtime_ns)",
         lambda s: s.replace_in("helpers.py", '"helpers-v1"', '"helpers-version-2"', True)),
        ("touch helpers.py (content unchanged)", "mtime only",
         lambda s: os.utime(os.path.join(s.app, "helpers.py"))),
        ("edit mylib/__init__.py (package __init__)", "VERSION changed, other size",
         lambda s: s.replace_in("mylib/__init__.py", '"mylib-1.0"', '"mylib-2.0.0"')),
        ("edit mylib/__init__.py, same size, mtime restored", "documented limitation",
         lambda s: s.replace_in("mylib/__init__.py", '"mylib-1.0"', '"mylib-2.0"', True)),
        ("edit helpers.py, same size, mtime restored", "documented limitation",
         lambda s: s.replace_in("helpers.py", '"helpers-v1"', '"helpers-v2"', True)),
        ("edit helpers.py, same size, same second", "mtime_ns differs, whole seconds equal",
         same_second_edit),
    ]
    for name, change, fn in cases:
        s = Scenario(ctx, slug(name))
        s.dump()
        # The plain runs of TRACE/DUMP wrote __pycache__; a plain run now uses it if valid.
        fn(s)
        t, sh = run_both(ctx, s.python, [s.main], s.app, archive=s.archive)
        pyc = R.run([s.python, s.main], env=R.base_env(), cwd=s.app, timeout=60)
        limitation = None
        if "limitation" in change or "same second" in name:
            edited = "mylib" if "mylib" in name else "helpers"

            def limitation(share, truth, pyc=pyc, edited=edited):
                served = edited in R.pycds_lines(share.err).served
                same_as_pyc = share.out == pyc.out
                if served:
                    return "stale: not detected (plain CPython with its .pyc: %s)" % (
                        "stale too" if same_as_pyc else "correct")
                return "detected; the normal import then uses the stale .pyc%s" % (
                    " (as plain CPython does)" if same_as_pyc else "")
        row = evaluate(ctx, name, change, t, sh, roots=app_roots(s), limitation=limitation)
        row["plain_with_pyc"] = "correct" if pyc.out == t.out else "stale"


def same_second_edit(s):
    path = os.path.join(s.app, "helpers.py")
    old = os.stat(path)
    s.replace_in("helpers.py", '"helpers-v1"', '"helpers-v2"')
    sec = old.st_mtime_ns // 10**9 * 10**9
    new_ns = sec + (old.st_mtime_ns - sec + 1) % 10**9   # same second, other nanoseconds
    os.utime(path, ns=(old.st_atime_ns, new_ns))


def slug(name):
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")[:60]


def sc_delete(ctx):
    s = Scenario(ctx, "delete")
    s.dump()
    os.unlink(os.path.join(s.app, "helpers.py"))
    t, sh = run_both(ctx, s.python, [s.main], s.app, archive=s.archive)
    evaluate(ctx, "delete helpers.py", "source removed (its .pyc stays in __pycache__)",
             t, sh)

    s = Scenario(ctx, "delete-submodule")
    s.dump()
    os.unlink(os.path.join(s.app, "mylib", "report.py"))
    t, sh = run_both(ctx, s.python, [s.main], s.app, archive=s.archive)
    evaluate(ctx, "delete mylib/report.py", "submodule source removed", t, sh)


HELPERS_PKG_INIT = '''\
"""helpers as a package (same API, other marker)."""
from ._impl import money, ratios, spread, fail
MARK = "helpers-package"
'''


def helpers_package(s, keep_module):
    """Turn helpers into a package ``helpers/`` (optionally keeping ``helpers.py``)."""
    src = os.path.join(s.app, "helpers.py")
    with open(src, encoding="utf-8") as f:
        text = f.read()
    pkg = os.path.join(s.app, "helpers")
    os.makedirs(pkg)
    with open(os.path.join(pkg, "_impl.py"), "w", encoding="utf-8") as f:
        f.write(text)
    with open(os.path.join(pkg, "__init__.py"), "w", encoding="utf-8") as f:
        f.write(HELPERS_PKG_INIT)
    if not keep_module:
        os.unlink(src)


MYLIB_MODULE = '''\
"""mylib as a single module (same API, other version)."""
import sys
from dataclasses import dataclass
import enum
import json


class Level(enum.Enum):
    LOW = 1
    HIGH = 2


@dataclass(frozen=True)
class Item:
    name: str
    qty: int
    price: str
    level: Level = Level.LOW


class Report:
    def __init__(self, title, items):
        self.title, self.items = title, list(items)

    def header(self):
        return "module %s: %d items" % (self.title, len(self.items))

    def as_json(self):
        return json.dumps([i.name for i in self.items])

    def wrapped(self, width=40):
        return " ".join(i.name for i in self.items)


VERSION = "mylib-module"
report = sys.modules[__name__]
'''


def sc_replace(ctx):
    s = Scenario(ctx, "module-to-package")
    s.dump()
    helpers_package(s, keep_module=False)
    t, sh = run_both(ctx, s.python, [s.main], s.app, archive=s.archive)
    evaluate(ctx, "replace helpers.py by a package helpers/", "helpers.py deleted", t, sh,
             roots=app_roots(s))

    s = Scenario(ctx, "package-next-to-module")
    s.dump()
    helpers_package(s, keep_module=True)
    t, sh = run_both(ctx, s.python, [s.main], s.app, archive=s.archive)
    evaluate(ctx, "add a package helpers/ next to helpers.py",
             "helpers.py untouched; the package wins in CPython", t, sh, roots=app_roots(s))

    s = Scenario(ctx, "extension-next-to-module")
    s.dump()
    suffix = R.run([s.python, "-c", "import importlib.machinery as m; "
                    "print(m.EXTENSION_SUFFIXES[0])"], timeout=60).out.strip()
    # Any shared object named like an extension module shadows helpers.py in CPython
    # (extensions come first); this one has no PyInit_helpers, so importing it fails.
    ext = R.run([s.python, "-c", "import _json; print(_json.__file__)"], timeout=60).out.strip()
    shutil.copyfile(ext, os.path.join(s.app, "helpers" + suffix))
    t, sh = run_both(ctx, s.python, [s.main], s.app, archive=s.archive)
    evaluate(ctx, "add an extension module helpers%s next to helpers.py" % suffix,
             "helpers.py untouched; the extension wins in CPython", t, sh)

    s = Scenario(ctx, "package-to-module")
    s.dump()
    shutil.rmtree(os.path.join(s.app, "mylib"))
    s.write("mylib.py", MYLIB_MODULE)
    t, sh = run_both(ctx, s.python, [s.main], s.app, archive=s.archive)
    evaluate(ctx, "replace package mylib/ by a module mylib.py", "mylib/ deleted", t, sh,
             roots=app_roots(s))

    s = Scenario(ctx, "module-next-to-package")
    s.dump()
    s.write("mylib.py", MYLIB_MODULE)
    t, sh = run_both(ctx, s.python, [s.main], s.app, archive=s.archive)
    evaluate(ctx, "add a module mylib.py next to package mylib/",
             "the package wins in CPython", t, sh, roots=app_roots(s))


SHADOW_TEXTWRAP = '''\
"""A shadow of the stdlib textwrap: the real one, with a marked fill()."""
import os, sys, sysconfig
_path = os.path.join(sysconfig.get_paths()["stdlib"], "textwrap.py")
with open(_path, encoding="utf-8") as _f:
    exec(compile(_f.read(), __file__, "exec"))
_fill = fill


def fill(text, width=70, **kw):
    return "SHADOW[" + _fill(text, width, **kw) + "]"
'''


def sc_shadow(ctx):
    stdlib = ctx.stdlib
    # 1. A stdlib module shadowed in the script directory.
    s = Scenario(ctx, "shadow-stdlib-scriptdir")
    s.dump()
    s.write("textwrap.py", SHADOW_TEXTWRAP)
    t, sh = run_both(ctx, s.python, [s.main], s.app, archive=s.archive)
    evaluate(ctx, "shadow stdlib textwrap in the script directory", "app/textwrap.py added",
             t, sh, names=("textwrap", "helpers"))

    # 2. ... through PYTHONPATH.
    s = Scenario(ctx, "shadow-stdlib-pythonpath")
    s.dump()
    sd = os.path.join(s.root, "shadow")
    os.makedirs(sd)
    with open(os.path.join(sd, "textwrap.py"), "w", encoding="utf-8") as f:
        f.write(SHADOW_TEXTWRAP)
    t, sh = run_both(ctx, s.python, [s.main], s.app, env={"PYTHONPATH": sd},
                     archive=s.archive)
    evaluate(ctx, "shadow stdlib textwrap via PYTHONPATH", "PYTHONPATH=shadow/ (textwrap.py)",
             t, sh, names=("textwrap", "helpers"))

    # 3. ... by a sourceless .pyc in the script directory.
    s = Scenario(ctx, "shadow-stdlib-pyc")
    s.dump()
    src = s.write("textwrap_src.py", SHADOW_TEXTWRAP)
    R.run([s.python, "-c", "import py_compile, sys; py_compile.compile(sys.argv[1], "
           "cfile=sys.argv[2], doraise=True)", src, os.path.join(s.app, "textwrap.pyc")],
          timeout=60)
    os.unlink(src)
    t, sh = run_both(ctx, s.python, [s.main], s.app, archive=s.archive)
    evaluate(ctx, "shadow stdlib textwrap by textwrap.pyc in the script directory",
             "sourceless app/textwrap.pyc", t, sh, names=("textwrap",))

    # 4. A namespace directory of the same name earlier on the path (does NOT shadow).
    s = Scenario(ctx, "namespace-dir")
    s.dump()
    os.makedirs(os.path.join(s.app, "textwrap"))
    t, sh = run_both(ctx, s.python, [s.main], s.app, archive=s.archive)
    evaluate(ctx, "empty directory textwrap/ in the script directory",
             "a namespace portion; CPython still imports the stdlib module", t, sh,
             names=("textwrap",))

    # 5. An app module shadowed: helpers lives in lib/ on PYTHONPATH at dump time; a new
    # helpers.py appears in the script directory (earlier on sys.path).
    s = Scenario(ctx, "shadow-app-module")
    lib = os.path.join(s.root, "lib")
    os.makedirs(lib)
    os.rename(os.path.join(s.app, "helpers.py"), os.path.join(lib, "helpers.py"))
    s.dump(env={"PYTHONPATH": lib})
    with open(os.path.join(lib, "helpers.py"), encoding="utf-8") as f:
        s.write("helpers.py", f.read().replace('"helpers-v1"', '"helpers-shadow"'))
    t, sh = run_both(ctx, s.python, [s.main], s.app, env={"PYTHONPATH": lib},
                     archive=s.archive)
    evaluate(ctx, "shadow app module helpers (lib/ on PYTHONPATH) in the script directory",
             "app/helpers.py added", t, sh, roots={"helpers": s.app})

    # 6. The same archive, lib/ removed from PYTHONPATH (module no longer on the path).
    os.unlink(os.path.join(s.app, "helpers.py"))
    t, sh = run_both(ctx, s.python, [s.main], s.app, archive=s.archive)
    evaluate(ctx, "helpers only in lib/, run without PYTHONPATH",
             "module not on sys.path any more", t, sh)
    del stdlib


def sc_places(ctx):
    s = Scenario(ctx, "places")
    s.dump()
    roots = app_roots(s)
    t, sh = run_both(ctx, s.python, [s.main], "/", archive=s.archive)
    evaluate(ctx, "run from another working directory (cwd /)", "absolute script path", t, sh,
             roots=roots)
    t, sh = run_both(ctx, s.python, [os.path.relpath(s.main, s.root)], s.root,
                     archive=s.archive)
    evaluate(ctx, "run as a relative path (app/main.py from the parent)", "-", t, sh,
             roots=roots)
    t, sh = run_both(ctx, s.python, ["-m", "main"], s.app, archive=s.archive)
    evaluate(ctx, "run as python -m main (cwd app/)", "sys.path[0] = cwd", t, sh, roots=roots)
    code = "import sys, runpy; sys.argv = ['main.py']; runpy.run_path('main.py', run_name='__main__')"
    t, sh = run_both(ctx, s.python, ["-c", code], s.app, archive=s.archive)
    evaluate(ctx, "run with -c from app/ ('' on sys.path)", "'' = cwd", t, sh, roots=roots)
    other = os.path.join(s.root, "other")
    os.makedirs(other)
    with open(os.path.join(other, "helpers.py"), "w", encoding="utf-8") as f:
        f.write(R.HELPERS_PY.replace('"helpers-v1"', '"helpers-other"'))
    shutil.copyfile(s.main, os.path.join(other, "main.py"))
    code2 = ("import os, sys, runpy; os.chdir(%r); sys.argv = ['main.py']; "
             "sys.path.append(%r); runpy.run_path('main.py', run_name='__main__')"
             % (other, s.app))
    t, sh = run_both(ctx, s.python, ["-c", code2], s.app, archive=s.archive)
    evaluate(ctx, "-c, chdir to a dir with another helpers.py before importing",
             "'' now means the other directory", t, sh,
             roots={"helpers": other, "mylib": s.app})
    std = ctx.stdlib
    t, sh = run_both(ctx, s.python, [s.main], s.app, env={"PYTHONPATH": std},
                     archive=s.archive)
    evaluate(ctx, "different sys.path order: PYTHONPATH=<stdlib dir>",
             "stdlib dir appears twice", t, sh, names=("json", "argparse", "helpers"),
             roots=roots)
    t, sh = run_both(ctx, s.python, [s.main], s.app, env={"PYTHONPATH": s.app},
                     archive=s.archive)
    evaluate(ctx, "PYTHONPATH=<app dir> (app dir twice on sys.path)", "-", t, sh, roots=roots)
    t, sh = run_both(ctx, s.python, ["-P", s.main], s.app, archive=s.archive)
    evaluate(ctx, "python -P main.py (script dir not on sys.path)",
             "helpers must not be importable", t, sh)
    t, sh = run_both(ctx, s.python, ["-I", s.main], s.app, archive=s.archive)
    evaluate(ctx, "python -I main.py (isolated mode)", "-", t, sh)
    t, sh = run_both(ctx, s.python, ["-O", s.main], s.app, archive=s.archive)
    evaluate(ctx, "python -O main.py (archive dumped without -O)", "optimization level", t, sh,
             names=("json", "helpers"), roots=roots)


def sc_moved(ctx):
    # Project directory renamed.
    s = Scenario(ctx, "moved-project")
    s.dump()
    new_app = os.path.join(s.root, "renamed")
    os.rename(s.app, new_app)
    main = os.path.join(new_app, "main.py")
    roots = {"helpers": new_app, "mylib": new_app, "mylib.report": new_app}
    t, sh = run_both(ctx, s.python, [main], new_app, archive=s.archive)
    evaluate(ctx, "project directory renamed", "app/ -> renamed/", t, sh, roots=roots)
    # ... and an identical copy (same sizes and mtimes) back at the old place.
    shutil.copytree(new_app, s.app)
    t, sh = run_both(ctx, s.python, [main], new_app, archive=s.archive)
    evaluate(ctx, "renamed, identical copy (mtimes kept) at the old path",
             "archive paths exist but are not the ones used", t, sh, roots=roots)
    shutil.rmtree(s.app)
    # ... old name now a symlink to the new directory.
    os.symlink(new_app, s.app)
    t, sh = run_both(ctx, s.python, [os.path.join(s.app, "main.py")], s.app, archive=s.archive)
    evaluate(ctx, "renamed, old path is a symlink to the new directory", "-", t, sh)


VENV_PROG = '''\
"""Imports a module from the virtual environment's site-packages."""
import json
import sys
import types
import vmod


def where(mod):
    names = sorted({v.__code__.co_filename for v in vars(mod).values()
                    if isinstance(v, types.FunctionType) and v.__module__ == mod.__name__})
    return "%s file=%s origin=%s code=%s" % (mod.__name__, mod.__file__, mod.__spec__.origin,
                                             names)


print(vmod.greet("venv"), json.dumps(vmod.DATA, sort_keys=True))
print(where(vmod))
print(where(json))
'''

VMOD = '''\
"""A module installed in site-packages."""
DATA = {"b": [1, 2], "a": None}


def greet(who):
    return "hello %s" % who
'''


def sc_venv(ctx):
    src_prefix = ctx.venv_prefix
    if not src_prefix:
        ctx.rows.append({"scenario": "virtualenv copied / moved", "change": "-",
                         "modules": [], "served_total": 0, "same_output": None,
                         "path_problems": [], "verdict": "skipped (--python is not in a venv)"})
        return
    base = os.path.join(ctx.work, "venvs")
    os.makedirs(base)
    a = os.path.join(base, "a")
    shutil.copytree(src_prefix, a, symlinks=True)
    py_rel = os.path.relpath(ctx.python_path_in_venv, src_prefix)
    site = R.run([os.path.join(a, py_rel), "-c", "import sysconfig; "
                  "print(sysconfig.get_paths()['purelib'])"], timeout=60).out.strip()
    with open(os.path.join(site, "vmod.py"), "w", encoding="utf-8") as f:
        f.write(VMOD)
    proj = os.path.join(base, "proj")
    os.makedirs(proj)
    prog = os.path.join(proj, "prog.py")
    with open(prog, "w", encoding="utf-8") as f:
        f.write(VENV_PROG)
    archive, lst = os.path.join(base, "venv.img"), os.path.join(base, "venv.lst")
    R.trace_and_dump(os.path.join(a, py_rel), [prog], lst, archive, cwd=proj)
    names = ("vmod", "json")
    t, sh = run_both(ctx, os.path.join(a, py_rel), [prog], proj, archive=archive)
    evaluate(ctx, "virtualenv: in place (reference)", "-", t, sh, names=names,
             roots={"vmod": a})
    b = os.path.join(base, "b-copied")
    shutil.copytree(a, b, symlinks=True)
    t, sh = run_both(ctx, os.path.join(b, py_rel), [prog], proj, archive=archive)
    evaluate(ctx, "virtualenv copied (original still in place)", "cp -a a b-copied", t, sh,
             names=names, roots={"vmod": b})
    c = os.path.join(base, "c-moved")
    os.rename(a, c)
    t, sh = run_both(ctx, os.path.join(c, py_rel), [prog], proj, archive=archive)
    evaluate(ctx, "virtualenv moved", "mv a c-moved", t, sh, names=names, roots={"vmod": c})


def sc_auto(ctx):
    """AUTO refreshes a stale archive: the next run serves the new code."""
    s = Scenario(ctx, "auto-refresh")
    s.dump()
    s.replace_in("helpers.py", '"helpers-v1"', '"helpers-version-2"')
    env = R.base_env(PYCDSMODE="AUTO", PYCDSARCHIVE=s.archive, PYCDSVERBOSE="2")
    first = R.run([s.python, s.main], env=env, cwd=s.app, timeout=60)
    t, sh = run_both(ctx, s.python, [s.main], s.app, archive=s.archive)
    row = evaluate(ctx, "edit, then one AUTO run, then SHARE",
                   "AUTO re-dumps at exit; SHARE serves the new helpers", t, sh,
                   roots=app_roots(s))
    first_ok = first.out == t.out and not R.pycds_lines(first.err).warnings
    row["extra"] = "AUTO run %s" % ("correct" if first_ok else "WRONG")
    if not first_ok:
        row["verdict"] = "WRONG (AUTO run)"
    if not any(m == "helpers served" for m in row["modules"]):
        row["verdict"] += " (helpers not served after AUTO)"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", required=True)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    t0 = time.monotonic()

    class Ctx:
        pass
    ctx = Ctx()
    ctx.python = args.python
    ctx.work = tempfile.mkdtemp(prefix="pycds-staleness-", dir=args.workdir)
    ctx.rows = []
    info = json.loads(R.run([args.python, "-c", "import json, sys, sysconfig; print(json.dumps("
                             "[sys.prefix, sys.base_prefix, sysconfig.get_paths()['stdlib']]))"],
                            timeout=60).out)
    ctx.venv_prefix = info[0] if info[0] != info[1] else None
    ctx.python_path_in_venv = os.path.abspath(args.python)
    ctx.stdlib = info[2]
    print("python: %s (%s); work directory %s" % (args.python,
                                                  R.interpreter_version(args.python), ctx.work))
    for fn in (sc_baseline, sc_edits, sc_delete, sc_replace, sc_shadow, sc_places, sc_moved,
               sc_venv, sc_auto):
        fn(ctx)
    print()
    rows = []
    for r in ctx.rows:
        mods = "; ".join(r["modules"])
        rows.append([r["scenario"], r["change"], mods, r["served_total"],
                     {True: "yes", False: "no", None: "-"}[r["same_output"]],
                     "ok" if not r["path_problems"] else "; ".join(r["path_problems"])[:80],
                     r["verdict"]])
    print(R.table(rows, ["scenario", "change", "program's modules", "served (all)",
                         "output = truth", "paths", "verdict"]))
    bad = [r for r in ctx.rows if r["verdict"].startswith(("WRONG", "CRASH"))]
    for r in ctx.rows:
        if r["verdict"] != "correct" and not r["verdict"].startswith("skipped"):
            print()
            print("### %s: %s" % (r["scenario"], r["verdict"]))
            print("first difference: %s" % r.get("diff"))
            if r.get("plain_with_pyc"):
                print("plain CPython with its __pycache__: %s" % r["plain_with_pyc"])
            print("SHARE exit status %s, truth %s" % (r["share_rc"], r["truth_rc"]))
            if r["verdict"].startswith(("WRONG", "CRASH")):
                print("SHARE stderr (end): %s" % r["share_err"][-700:])
    print()
    print("%d scenarios, %d wrong; wall time %.0f s" % (len(ctx.rows), len(bad),
                                                        time.monotonic() - t0))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(ctx.rows, f, indent=1)
    if not args.keep:
        shutil.rmtree(ctx.work, ignore_errors=True)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
