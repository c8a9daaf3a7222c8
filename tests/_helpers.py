"""Helpers for the pycds object-layer tests.

Two halves, both free of pytest so that child interpreters can import them too:

* parent side: running child interpreters (``run_python``), building archives of
  hand-written modules (``save_module``), locating the per-version virtual environments;
* child side: comparing an archived code object with a freshly compiled one
  (``compare_code``, ``interning_problems``, ``dis_problems``) and the two halves of the
  standard-library round trip (``stdlib_save_main``, ``stdlib_check_main``), run as
  ``python -c "import _helpers; _helpers.stdlib_check_main()" ...``.
"""

import json
import os
import struct
import subprocess
import sys
import textwrap
import types

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS_DIR)
PY_VERSION = "%d.%d" % sys.version_info[:2]

CodeType = types.CodeType


# ---------------------------------------------------------------------------------------
# parent side
# ---------------------------------------------------------------------------------------


def venv_python(version):
    """The interpreter of ``.venv/<version>`` (with pycds installed), or None."""
    p = os.path.join(REPO, ".venv", version, "bin", "python")
    return p if os.access(p, os.X_OK) else None


def child_env(extra=None):
    """The environment of a child interpreter: no pycds import hook, our helpers on the
    path, faulthandler on (a crash then leaves a traceback on stderr)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYCDS")}
    for k in ("PYTHONSTARTUP", "PYTHONWARNINGS", "PYTHONMALLOC", "PYTHONDEVMODE", "PYTHONINSPECT"):
        env.pop(k, None)
    env["PYTHONPATH"] = TESTS_DIR
    env["PYTHONFAULTHANDLER"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    if extra:
        for k, v in extra.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
    return env


def describe(proc):
    return "exit status %r\n--- stdout ---\n%s\n--- stderr ---\n%s" % (
        proc.returncode,
        proc.stdout[-6000:],
        proc.stderr[-6000:],
    )


def run_python(
    script,
    *args,
    python=None,
    env=None,
    timeout=120,
    check=True,
    warnings_error=True,
    python_args=(),
    script_dir=None,
    input=None,
):
    """Run ``script`` in a fresh interpreter. With ``check`` (the default), assert it
    exits with status 0 and writes nothing at all to stderr (clean shutdown)."""
    cmd = [python or sys.executable]
    if warnings_error:
        cmd += ["-W", "error"]
    cmd += list(python_args)
    script = textwrap.dedent(script)
    if script_dir is not None:
        # A real file, so that tracebacks of a failing child show the source lines.
        path = os.path.join(str(script_dir), "child_%d.py" % run_python.counter)
        run_python.counter += 1
        with open(path, "w", encoding="utf-8") as f:
            f.write(script)
        cmd.append(path)
    else:
        cmd += ["-c", script]
    cmd += [str(a) for a in args]
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        errors="backslashreplace",
        timeout=timeout,
        env=child_env(env),
        cwd=str(script_dir) if script_dir is not None else TESTS_DIR,
        input=input,
    )
    if check:
        assert proc.returncode == 0 and proc.stderr == "", describe(proc)
    return proc


run_python.counter = 0


MODULE_PRELUDE = '''\
import sys, os, types
import pycds
ARCHIVE = {archive!r}
SRC = {src!r}
A = pycds.load(ARCHIVE)
CODE = A["mod"]
assert type(CODE) is types.CodeType, type(CODE)

def load_module(name, code=None):
    """A real module object registered in sys.modules, populated by exec'ing the
    archived module code (or ``code``)."""
    m = types.ModuleType(name)
    m.__file__ = SRC
    sys.modules[name] = m
    exec(CODE if code is None else code, m.__dict__)
    return m

def read_src():
    with open(SRC, encoding="utf-8") as f:
        return f.read()

def normal_code():
    """The same module compiled normally in this process (after the archive load)."""
    with open(SRC, "rb") as f:
        return compile(f.read(), SRC, "exec")
'''


def save_module(tmp_path, source, *, name="mod", extra_roots=None, stem="behave_mod"):
    """Write ``source`` to a real file, compile it with that file name in THIS process and
    save the code object as root ``name`` (plus ``extra_roots``). Returns (archive, src)."""
    import pycds

    source = textwrap.dedent(source)
    src = os.path.join(str(tmp_path), stem + ".py")
    with open(src, "w", encoding="utf-8") as f:
        f.write(source)
    code = compile(source, src, "exec")
    roots = {name: code}
    roots.update(extra_roots or {})
    archive = os.path.join(str(tmp_path), stem + ".cds")
    pycds.save(archive, roots)
    return archive, src


def run_module_test(tmp_path, source, body, *, env=None, timeout=120, python_args=(), extra_roots=None):
    """Archive ``source`` as a module code object, then in a fresh interpreter load it and
    run ``body`` (after ``MODULE_PRELUDE``). Returns the child's stdout."""
    archive, src = save_module(tmp_path, source, extra_roots=extra_roots)
    script = MODULE_PRELUDE.format(archive=archive, src=src) + textwrap.dedent(body)
    return run_python(
        script, env=env, timeout=timeout, python_args=python_args, script_dir=tmp_path
    ).stdout


def sample_data():
    """Roots of every archivable kind; built the same way in the parent (saved) and in the
    child (expected values), compared with const_key (bit-exact floats)."""
    nan = float("nan")
    payload_nan = struct.unpack("<d", struct.pack("<Q", 0x7FF8000000000123))[0]
    neg_nan = struct.unpack("<d", struct.pack("<Q", 0xFFF8000000000000))[0]
    deep = ()
    for i in range(150):
        deep = (i, deep)
    return {
        "none": None,
        "true": True,
        "false": False,
        "ellipsis": ...,
        "zero": 0,
        "small": 7,
        "neg": -1,
        "big": 2**200,
        "negbig": -(3**150),
        "float": 1.5,
        "negzero": -0.0,
        "inf": float("inf"),
        "nan": nan,
        "payload_nan": payload_nan,
        "neg_nan": neg_nan,
        "complex": complex(-0.0, nan),
        "str_ascii": "hello",
        "str_latin1": "caf\xe9",
        "str_ucs2": "\u20ac\u0100",
        "str_ucs4": "\U0001f600x",
        "str_nul": "a\x00b",
        "str_surrogate": "\ud800",
        "str_empty": "",
        "bytes": b"\x00\xff" * 10,
        "bytes_empty": b"",
        "tuple_empty": (),
        "tuple": (1, "a", b"b", 2.5, 3j, None, True, False, ..., (), ("nested", ("deeper", (-1,)))),
        "frozenset": frozenset({1, "a", b"b", (1, 2), 2.5, None}),
        "frozenset_empty": frozenset(),
        "frozenset_nested": (frozenset({frozenset({1, "x"}), 2}), frozenset()),
        "deep": deep,
        "big_bytes": bytes(range(256)) * 4096,
        "big_str": "x" * 100000 + "\u20ac",
        "\u043a\u043b\u044e\u0447 \u20ac": ("unicode root name",),
    }


# ---------------------------------------------------------------------------------------
# child side: comparing objects
# ---------------------------------------------------------------------------------------


def walk_codes(code):
    """``code`` and every code object nested in its constants, depth first."""
    out = []
    stack = [code]
    while stack:
        c = stack.pop()
        out.append(c)
        stack.extend(reversed([k for k in c.co_consts if type(k) is CodeType]))
    return out


def float_bits(x):
    return struct.pack("<d", x)


def const_key(x):
    """A hashable key equal for two constants iff they have identical types and values
    (floats compared bit for bit, so nan and -0.0 are handled)."""
    t = type(x)
    if t is float:
        return ("float", float_bits(x))
    if t is complex:
        return ("complex", float_bits(x.real), float_bits(x.imag))
    if t is tuple:
        return ("tuple", tuple(const_key(i) for i in x))
    if t is frozenset:
        return ("frozenset", frozenset(const_key(i) for i in x))
    if t is CodeType:
        return ("code", id(x))
    if x is None or x is Ellipsis or t is bool:
        return (t.__name__, repr(x))
    if t in (int, str, bytes):
        return (t.__name__, x)
    return ("other", t.__name__, id(x))


CODE_ATTRS = (
    "co_argcount",
    "co_posonlyargcount",
    "co_kwonlyargcount",
    "co_nlocals",
    "co_stacksize",
    "co_flags",
    "co_firstlineno",
    "co_code",
    "co_names",
    "co_varnames",
    "co_freevars",
    "co_cellvars",
    "co_filename",
    "co_name",
    "co_qualname",
    "co_linetable",
    "co_exceptiontable",
)


def compare_consts(a, b, where, problems):
    """Deep comparison of two constants: identical types and values, recursively."""
    if type(a) is not type(b):
        problems.append("%s: type %s != %s" % (where, type(a).__name__, type(b).__name__))
        return
    t = type(a)
    if t is CodeType:
        compare_code(a, b, where, problems)
    elif t is tuple:
        if len(a) != len(b):
            problems.append("%s: tuple length %d != %d" % (where, len(a), len(b)))
            return
        for i, (x, y) in enumerate(zip(a, b)):
            compare_consts(x, y, "%s[%d]" % (where, i), problems)
    elif const_key(a) != const_key(b):
        problems.append("%s: %s %r != %r" % (where, t.__name__, a, b))


def compare_code(a, b, where, problems):
    """Attribute-by-attribute comparison of two code objects (constants recursively)."""
    for attr in CODE_ATTRS:
        x, y = getattr(a, attr), getattr(b, attr)
        if type(x) is not type(y) or x != y:
            problems.append("%s.%s: %r != %r" % (where, attr, x, y)[:500])
    x, y = getattr(a, "_co_code_adaptive", None), getattr(b, "_co_code_adaptive", None)
    if x != y:
        problems.append("%s._co_code_adaptive differs" % where)
    if list(a.co_positions()) != list(b.co_positions()):
        problems.append("%s.co_positions() differ" % where)
    if list(a.co_lines()) != list(b.co_lines()):
        problems.append("%s.co_lines() differ" % where)
    if len(a.co_consts) != len(b.co_consts):
        problems.append("%s: %d constants != %d" % (where, len(a.co_consts), len(b.co_consts)))
        return
    for i, (x, y) in enumerate(zip(a.co_consts, b.co_consts)):
        compare_consts(x, y, "%s(%s).co_consts[%d]" % (where, a.co_qualname, i), problems)


_UNICODE_STATE_OFFSET = 32  # PyObject header (16) + length (8) + hash (8), 3.11-3.13


def is_interned(s):
    """Whether ``s`` is interned, WITHOUT interning it (``s is sys.intern(s)`` would intern
    a string no equal string was interned before, and so change what it observes)."""
    assert type(s) is str
    f = getattr(sys, "_is_interned", None)  # 3.13+
    if f is not None:
        return f(s)
    import ctypes

    return ctypes.c_uint32.from_address(id(s) + _UNICODE_STATE_OFFSET).value & 3 != 0


def _string_pairs(a, b, where, out):
    """Pairs (where, archived str, reference str) reachable from two equal constants."""
    if type(a) is str and type(b) is str:
        out.append((where, a, b))
    elif type(a) is tuple and type(b) is tuple and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            _string_pairs(x, y, "%s[%d]" % (where, i), out)
    elif type(a) is frozenset and type(b) is frozenset and len(a) == len(b):
        xs = sorted(a, key=lambda v: repr(const_key(v)))
        ys = sorted(b, key=lambda v: repr(const_key(v)))
        for i, (x, y) in enumerate(zip(xs, ys)):
            _string_pairs(x, y, "%s{%d}" % (where, i), out)


def is_singleton_str(s):
    """'' and the 1-character latin-1 strings: archived as references to the runtime's
    own singletons (a separate, known deviation; see test_single_char_names_interned)."""
    return len(s) == 0 or (len(s) == 1 and ord(s) < 256)


def interning_problems(arch, ref, where, singletons=None):
    """Every name (co_names, co_varnames, co_freevars, co_cellvars, co_name, co_qualname)
    and string constant of ``arch`` must be interned exactly when the corresponding one of
    ``ref`` (what a normal import gives: a marshal round trip of fresh code) is, and an
    interned string must be THE canonical one (``s is sys.intern(s)``).

    With ``singletons`` (a list), mismatches of '' and 1-character latin-1 strings are
    appended there instead of being reported as problems."""
    problems = []
    pairs = []
    for ca, cr in zip(walk_codes(arch), walk_codes(ref)):
        w = "%s:%s" % (where, ca.co_qualname)
        for attr in ("co_names", "co_varnames", "co_freevars", "co_cellvars"):
            for i, (x, y) in enumerate(zip(getattr(ca, attr), getattr(cr, attr))):
                pairs.append(("%s.%s[%d]" % (w, attr, i), x, y))
        pairs.append((w + ".co_name", ca.co_name, cr.co_name))
        pairs.append((w + ".co_qualname", ca.co_qualname, cr.co_qualname))
        for i, (x, y) in enumerate(zip(ca.co_consts, cr.co_consts)):
            _string_pairs(x, y, "%s.co_consts[%d]" % (w, i), pairs)
    for w, s, r in pairs:
        si, ri = is_interned(s), is_interned(r)
        if si != ri:
            msg = "%s %r: interned %s in archive, %s in a normal import" % (w, s, si, ri)
            if singletons is not None and is_singleton_str(s):
                singletons.append(msg)
            else:
                problems.append(msg)
        elif si and sys.intern(s) is not s:
            problems.append("%s %r: flagged interned but not the canonical string" % (w, s))
    return problems


def _frozenset_reprs(code, out):
    def visit(k):
        if type(k) is frozenset:
            out[repr(k)] = "frozenset({%s})" % ", ".join(sorted(repr(x) for x in k))
        elif type(k) is tuple:
            for x in k:
                visit(x)

    for k in code.co_consts:
        visit(k)


def dis_text(code):
    """``dis.Bytecode(c).dis()`` of ``code`` and of every nested code object, with object
    addresses (``<code object f at 0x...>``) blanked out and frozenset constants shown
    with sorted members: a set's iteration order depends on the per-process string hash
    seed and on insertion history, so it differs between any two processes (a normal
    import rebuilds frozensets from the .pyc too)."""
    import dis
    import re

    out = []
    for c in walk_codes(code):
        text = re.sub(r" at 0x[0-9a-fA-F]+", " at 0x?", dis.Bytecode(c).dis())
        fs = {}
        _frozenset_reprs(c, fs)
        for old in sorted(fs, key=len, reverse=True):
            text = text.replace(old, fs[old])
        out.append(text)
    return out


def dis_problems(arch, ref, where):
    a, b = dis_text(arch), dis_text(ref)
    if a == b:
        return []
    if len(a) != len(b):
        return ["%s: %d nested code objects != %d" % (where, len(a), len(b))]
    out = []
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            import difflib

            diff = "\n".join(list(difflib.unified_diff(y.splitlines(), x.splitlines(), lineterm=""))[:20])
            out.append("%s: dis of nested code #%d differs:\n%s" % (where, i, diff))
    return out


def full_code_check(arch, fresh, imported, where, singletons=None):
    """Everything the stdlib round trip checks for one module: ``arch`` (loaded from an
    archive) against ``fresh`` (compiled again from the same source in this process) and
    ``imported`` (``marshal.loads(marshal.dumps(fresh))``: what a normal import gives)."""
    import marshal

    problems = []
    if type(arch) is not CodeType:
        return ["%s: archived root is a %s" % (where, type(arch).__name__)]
    # Code equality compares float constants with ==, so a NaN constant makes any two
    # separately created copies unequal (even two compiles); then only the attribute and
    # bit-exact constant comparisons below are meaningful.
    comparable = imported == fresh
    if comparable and not (arch == fresh):
        problems.append("%s: archived code != freshly compiled code" % where)
    compare_code(arch, fresh, where, problems)
    problems += dis_problems(arch, fresh, where)
    problems += interning_problems(arch, imported, where, singletons)
    again = marshal.loads(marshal.dumps(arch))
    if not comparable:
        compare_code(again, fresh, where + "(marshal round trip)", problems)
    elif not (again == fresh):
        problems.append("%s: marshal round trip of the archived code != fresh code" % where)
    return problems


# ---------------------------------------------------------------------------------------
# the standard-library round trip (run in child interpreters)
# ---------------------------------------------------------------------------------------


def stdlib_files():
    """Every .py file of the installed standard library (site-packages excluded), as
    (root name = path relative to the stdlib directory, absolute path), sorted."""
    import sysconfig

    root = sysconfig.get_paths()["stdlib"]
    out = []
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(x for x in dirs if x not in ("site-packages", "dist-packages", "__pycache__"))
        for f in sorted(files):
            if f.endswith(".py"):
                p = os.path.join(d, f)
                out.append((os.path.relpath(p, root), p))
    out.sort()
    return out


# Modules both halves import before compiling anything, so that the two processes have
# interned the same strings when they compile module k (compiling interns names, and
# whether a constant equal to a name ends up interned depends on what was interned
# before: the same object may be shared by the name and the constant).
_PREIMPORT = ("ctypes", "difflib", "dis", "gc", "json", "marshal", "re", "warnings", "pycds")


def _preimport():
    import importlib

    for m in _PREIMPORT:
        importlib.import_module(m)


def _compile_file(path):
    import warnings

    with open(path, "rb") as f:
        src = f.read()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return compile(src, path, "exec")


def stdlib_save_main():
    """argv: archive, batch file (JSON list of [name, path]). Compiles every file that
    compiles and saves them all; prints JSON {"saved": [...], "skipped": [[name, why]]}."""
    _preimport()
    import pycds

    archive, batch_file = sys.argv[1:3]
    with open(batch_file) as f:
        batch = json.load(f)
    roots, skipped = {}, []
    for name, path in batch:
        try:
            roots[name] = _compile_file(path)
        except (SyntaxError, ValueError, UnicodeError, RecursionError, MemoryError) as e:
            skipped.append([name, "%s: %s" % (type(e).__name__, e)])
    pycds.save(archive, roots)
    print(json.dumps({"saved": sorted(roots), "skipped": skipped}))


def stdlib_check_main():
    """argv: archive, stdlib directory, "1" to check objects at load ("0": trust them, as
    the import hook does). For every root, in the order the saver compiled them: compile
    the file again, then load the root from the archive and check it; prints JSON
    {"checked": n, "problems": [...], "singletons": n}."""
    _preimport()
    import gc
    import marshal

    import pycds

    archive, root, check = sys.argv[1:4]
    a = pycds.load(archive, check=check == "1")
    problems, singletons = [], []
    keep = []  # like the saver, keep every compiled module alive (3.11 interning is mortal)
    checked = 0
    for name in sorted(a):
        fresh = _compile_file(os.path.join(root, name))
        imported = marshal.loads(marshal.dumps(fresh))
        arch = a[name]
        problems += full_code_check(arch, fresh, imported, name, singletons)[:20]
        checked += 1
        keep.append((fresh, imported))
    gc.collect()
    print(json.dumps({"checked": checked, "problems": problems, "singletons": singletons}))
