"""``python -m pycds``: trace, dump, run, inspect, verify and benchmark archives.

Every subcommand that runs Python runs ``sys.executable`` in a child process with the
``PYCDSMODE`` environment of the ``pycds.pth`` hook, so the CLI behaves exactly like the
environment-variable workflow::

    python -m pycds trace -o app.lst -- app.py        # PYCDSMODE=TRACE
    python -m pycds dump app.lst -o app.img           # PYCDSMODE=DUMP
    python -m pycds run --archive app.img -- app.py   # PYCDSMODE=SHARE

Errors are one line on stderr; the exit status is 2 for usage errors and 1 for failures
(``trace`` and ``run`` exit with the program's own status).
"""

import argparse
import ast
import json
import os
import subprocess
import sys
import tempfile
import time

import pycds
from pycds import _pycds

PROG = "python -m pycds"
_PYCDS_VARS = ("PYCDSMODE", "PYCDSLIST", "PYCDSARCHIVE", "PYCDSVERBOSE")


class CLIError(Exception):
    """A failure reported as one line on stderr; ``status`` is the exit status."""

    def __init__(self, message, status=1):
        super().__init__(message)
        self.status = status


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (and exit status 2)."""

    def error(self, message):
        raise CLIError("%s (see %s --help)" % (message, self.prog), 2)


def _msg(exc):
    """A one-line description of an exception."""
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
        if exc.filename is not None:
            text = "%s: %s" % (exc.filename, text)
        return text
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())


# -- helpers ------------------------------------------------------------------------------

def _env(mode=None, **values):
    """The environment for a child: without any PYCDS* variable, plus the given ones."""
    env = {k: v for k, v in os.environ.items() if k not in _PYCDS_VARS}
    if mode is not None:
        env["PYCDSMODE"] = mode
    for k, v in values.items():
        if v is not None:
            env[k] = v
    return env


def _status(rc):
    """A child's exit status as a shell would report it (128 + signal number)."""
    return rc if rc >= 0 else 128 - rc


def _command(ns, extra):
    """The Python command line of ``trace``/``run``/``bench`` (after ``--``)."""
    cmd = list(ns.command) + list(extra or ())
    if not cmd:
        raise CLIError("missing the Python command to run (e.g. %s %s ... -- app.py)"
                       % (PROG, ns.subcommand), 2)
    return cmd


def _check_archive_file(path):
    if not os.path.exists(path):
        raise CLIError("%s: no such archive" % path)
    if not os.path.isfile(path):
        raise CLIError("%s: not a regular file" % path)


def _check_output_dir(path, what):
    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d):
        raise CLIError("%s: directory %s does not exist (for the %s)" % (path, d, what))
    if os.path.isdir(path):
        raise CLIError("%s: is a directory (expected the %s file)" % (path, what))


# Options of the ``python`` command line that take a separate argument.
_OPTS_WITH_ARG = ("-X", "-W", "--check-hash-based-pycs")


def _split_python_args(cmd):
    """``(interpreter options, rest)`` of a Python command line: the options before the
    script, ``-c``, ``-m`` or ``-``."""
    i = 0
    while i < len(cmd):
        a = cmd[i]
        if a in _OPTS_WITH_ARG:
            i += 2
            continue
        if a in ("-c", "-m", "-") or not a.startswith("-"):
            break
        if a[1:2] in ("c", "m"):  # -cCODE, -mMOD
            break
        i += 1
    return cmd[:i], cmd[i:]


def _script_dir(cmd):
    """The directory of the script a Python command line runs, if it runs a file."""
    _, rest = _split_python_args(cmd)
    if rest and not rest[0].startswith("-"):
        script = rest[0]
        if os.path.isdir(script):
            return os.path.abspath(script)
        return os.path.dirname(os.path.realpath(script))
    return None


def _count_lines(path):
    try:
        with open(path, encoding="utf-8") as f:
            return sum(1 for line in f if line.strip())
    except OSError:
        return None


def _size(n):
    if n >= 1e6:
        return "%.1f MB" % (n / 1e6)
    if n >= 1e3:
        return "%.1f kB" % (n / 1e3)
    return "%d bytes" % n


def _size_full(n):
    """``9.6 MB (9620944 bytes)``, or ``752 bytes``."""
    return _size(n) if n < 1e3 else "%s (%d bytes)" % (_size(n), n)


# -- trace / run --------------------------------------------------------------------------

def cmd_trace(ns, extra):
    cmd = _command(ns, extra)
    out = os.path.abspath(ns.output)
    _check_output_dir(out, "module list")
    if ns.fresh and os.path.exists(out):
        os.unlink(out)
    before = _count_lines(out) or 0
    rc = subprocess.run([sys.executable, *cmd],
                        env=_env("TRACE", PYCDSLIST=out)).returncode
    after = _count_lines(out)
    if after is None:
        raise CLIError("%s: no module list was written (did the program exit through "
                       "os._exit or a signal?)" % ns.output, _status(rc) or 1)
    if not ns.quiet:
        sys.stderr.write("pycds: %s: %d modules (%d new)\n" % (ns.output, after, after - before))
    return _status(rc)


def cmd_run(ns, extra):
    cmd = _command(ns, extra)
    _check_archive_file(ns.archive)
    verbose = str(ns.verbose) if ns.verbose else os.environ.get("PYCDSVERBOSE")
    env = _env("SHARE", PYCDSARCHIVE=os.path.abspath(ns.archive), PYCDSVERBOSE=verbose)
    return _status(subprocess.run([sys.executable, *cmd], env=env).returncode)


# -- dump ---------------------------------------------------------------------------------

# Run in the dump process after start-up (the dump itself ran in pycds.pth): report the
# result recorded by pycds._startup. Imports nothing (the current directory is on the
# path and could shadow a module).
_DUMP_REPORT = """\
import sys
h = sys.modules.get("pycds._hook")
state = h._state if h is not None else {}
with open(sys.argv[1], "w", encoding="utf-8") as f:
    f.write(repr({"result": state.get("dump"), "error": state.get("error")}))
"""


def _run_dump(list_path, archive_path, python_opts=(), path=()):
    """Dump in a fresh interpreter (``PYCDSMODE=DUMP``); returns the dump statistics."""
    env = _env("DUMP", PYCDSLIST=os.path.abspath(list_path),
               PYCDSARCHIVE=os.path.abspath(archive_path))
    if path:
        extra = os.pathsep.join(os.path.abspath(p) for p in path)
        env["PYTHONPATH"] = extra + (os.pathsep + env["PYTHONPATH"]
                                     if env.get("PYTHONPATH") else "")
    fd, report = tempfile.mkstemp(prefix="pycds-dump-", suffix=".json")
    os.close(fd)
    try:
        p = subprocess.run([sys.executable, *python_opts, "-c", _DUMP_REPORT, report],
                           env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, errors="replace")
        try:
            with open(report, encoding="utf-8") as f:
                data = ast.literal_eval(f.read() or "{}")
        except (OSError, ValueError, SyntaxError):
            data = {}
    finally:
        try:
            os.unlink(report)
        except OSError:
            pass
    if data.get("result") is None:
        why = data.get("error")
        if not why:
            lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
            why = lines[-1] if lines else "the dump did not run (exit status %d; is " \
                "pycds.pth installed and site enabled?)" % _status(p.returncode)
        if why.startswith("DUMP failed: "):
            why = why[len("DUMP failed: "):]
        raise CLIError("cannot dump %s to %s: %s" % (list_path, archive_path, why))
    return data["result"]


def cmd_dump(ns, extra):
    if not os.path.isfile(ns.list):
        raise CLIError("%s: no such module list" % ns.list if not os.path.exists(ns.list)
                       else "%s: not a regular file" % ns.list)
    _check_output_dir(ns.output, "archive")
    r = _run_dump(ns.list, ns.output, python_opts=extra or (), path=ns.path)
    skipped = r["skipped"]
    print("wrote %s: %d modules, %s, %d skipped"
          % (ns.output, r["modules"], _size_full(r["bytes"]), len(skipped)))
    for pyc in r.get("bytecode_written", ()):
        print("wrote %s (pycds's own start-up code had no current .pyc)" % pyc)
    if ns.verbose:
        for name, why in skipped:
            print("  skipped %s: %s" % (name, why))
    elif skipped:
        print("  (use -v to see why modules were skipped)")
    return 0


# -- inspect / verify ---------------------------------------------------------------------

def _module_rows(info):
    rows = []
    for name, size, meta in info["roots"]:
        origin, pkg = None, False
        if meta:
            try:
                decoded = _pycds.decode_module_meta(bytes(meta))
                origin, pkg = decoded["origin"], decoded["kind"] == "package"
            except (ValueError, IndexError):
                pass
        rows.append({"name": name, "bytes": size, "origin": origin, "package": pkg})
    rows.sort(key=lambda r: (-r["bytes"], r["name"]))
    return rows


def _load_info(path, fn):
    _check_archive_file(path)
    try:
        return fn(path)
    except pycds.IncompatibleArchiveError as exc:
        raise CLIError("%s: incompatible archive: %s" % (path, _msg(exc)))
    except pycds.CorruptArchiveError as exc:
        text = _msg(exc)
        if "bad magic" in text:
            raise CLIError("%s: not a pycds archive (%s)" % (path, text))
        raise CLIError("%s: corrupt archive: %s" % (path, text))
    except (pycds.PycdsError, OSError) as exc:
        raise CLIError("%s: %s" % (path, _msg(exc)))


def cmd_inspect(ns, extra):
    info = _load_info(ns.archive, pycds.inspect)
    rows = _module_rows(info)
    refused = info["refused_because"]
    if ns.json:
        out = {k: v for k, v in info.items() if k != "roots"}
        out["archive"] = ns.archive
        out["usable"] = refused is None
        out["modules"] = rows
        json.dump(out, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    total = sum(r["bytes"] for r in rows)
    print("archive:        %s" % ns.archive)
    print("format version: %s (written by %s)" % (info["format_version"], info["producer"]))
    print("file size:      %s; heap %d bytes"
          % (_size_full(info["file_bytes"]), info["heap_bytes"]))
    print("modules:        %d (%d bytes of objects)" % (len(rows), total))
    if refused is None:
        print("usable here:    yes (%s)" % sys.version.split()[0])
    else:
        print("usable here:    no: %s" % " ".join(str(refused).split()))
    print("fingerprint:")
    for line in info["fingerprint"].splitlines():
        if line.strip():
            print("  " + line)
    shown = rows if ns.all else rows[:ns.top]
    if shown:
        print("modules by size%s:" % ("" if len(shown) == len(rows)
                                      else " (top %d of %d; --all for all)"
                                      % (len(shown), len(rows))))
        width = max(len(r["name"]) for r in shown)
        for r in shown:
            line = "  %10d  %-*s" % (r["bytes"], width, r["name"])
            if r["origin"]:
                line += "  %s%s" % (r["origin"], " (package)" if r["package"] else "")
            print(line.rstrip())
    return 0


def cmd_verify(ns, extra):
    r = _load_info(ns.archive, pycds.verify)
    print("%s: OK (Python %s, %d modules, %d spans, %d objects)"
          % (ns.archive, r["python"], r["roots"], r["spans"], r["objects"]))
    return 0


# -- bench --------------------------------------------------------------------------------

def _median(xs):
    s = sorted(xs)
    n = len(s)
    if not n:
        return float("nan")
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def _timed(argv, env):
    t0 = time.perf_counter()
    p = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise CLIError("the command failed with exit status %d during timing"
                       % _status(p.returncode))
    return dt


def _captured(argv, env):
    return subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True)


def _first_line(data):
    for line in data.decode("utf-8", "replace").splitlines()[::-1]:
        if line.strip():
            return line.strip()
    return ""


def cmd_bench(ns, extra):
    cmd = _command(ns, extra)
    if ns.n < 1:
        raise CLIError("-n must be at least 1", 2)
    if ns.warmup < 0:
        raise CLIError("--warmup must not be negative", 2)
    if ns.workdir:
        os.makedirs(ns.workdir, exist_ok=True)
        return _bench(ns, cmd, os.path.abspath(ns.workdir))
    with tempfile.TemporaryDirectory(prefix="pycds-bench-") as d:
        return _bench(ns, cmd, d)


def _bench(ns, cmd, workdir):
    argv = [sys.executable, *cmd]
    lst = os.path.join(workdir, "bench.lst")
    archive = os.path.join(workdir, "bench.img")
    if os.path.exists(lst):
        os.unlink(lst)
    plain_env = _env()
    share_env = _env("SHARE", PYCDSARCHIVE=archive)

    # 1. A plain run: the reference output (and the command must work).
    plain = _captured(argv, plain_env)
    if plain.returncode != 0:
        raise CLIError("the command failed with exit status %d: %s"
                       % (_status(plain.returncode), _first_line(plain.stderr)))
    # 2. Trace, 3. dump (with the command's interpreter options and script directory).
    tr = _captured(argv, _env("TRACE", PYCDSLIST=lst))
    if tr.returncode != 0 or not os.path.exists(lst):
        raise CLIError("tracing failed (exit status %d): %s"
                       % (_status(tr.returncode), _first_line(tr.stderr)))
    opts, _ = _split_python_args(cmd)
    sdir = _script_dir(cmd)
    dumped = _run_dump(lst, archive, python_opts=opts, path=[sdir] if sdir else ())
    archive_bytes = os.path.getsize(archive)
    # 4. A shared run: same output, and how many modules it serves.
    shared = _captured(argv, _env("SHARE", PYCDSARCHIVE=archive, PYCDSVERBOSE="1"))
    err_lines = shared.stderr.splitlines(keepends=True)
    served = sum(1 for ln in err_lines if ln.startswith(b"pycds: served "))
    shared_err = b"".join(ln for ln in err_lines if not ln.startswith(b"pycds: served "))
    if not ns.no_check:
        for what, a, b in (("exit status", plain.returncode, shared.returncode),
                           ("stdout", plain.stdout, shared.stdout),
                           ("stderr", plain.stderr, shared_err)):
            if a != b:
                for name, data in (("plain", plain), ("pycds", shared)):
                    with open(os.path.join(workdir, "%s.out" % name), "wb") as f:
                        f.write(data.stdout)
                    with open(os.path.join(workdir, "%s.err" % name), "wb") as f:
                        f.write(data.stderr)
                where = ("both outputs are in %s" % workdir if ns.workdir
                         else "use --workdir to keep both outputs")
                raise CLIError("the %s of the program differs with pycds (%s; --no-check "
                               "to time anyway)" % (what, where))
    # 5. Timing, alternating plain and pycds runs.
    for _ in range(ns.warmup):
        _timed(argv, plain_env)
        _timed(argv, share_env)
    plain_t, share_t = [], []
    for _ in range(ns.n):
        plain_t.append(_timed(argv, plain_env))
        share_t.append(_timed(argv, share_env))
    ratios = [s / p for p, s in zip(plain_t, share_t)]
    result = {
        "command": cmd,
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "pairs": ns.n,
        "warmup": ns.warmup,
        "plain_median_ms": _median(plain_t) * 1e3,
        "pycds_median_ms": _median(share_t) * 1e3,
        "ratio_median": _median(ratios),
        "plain_ms": [t * 1e3 for t in plain_t],
        "pycds_ms": [t * 1e3 for t in share_t],
        "ratios": ratios,
        "modules_served": served,
        "modules_archived": dumped["modules"],
        "modules_skipped": [list(x) for x in dumped["skipped"]],
        "archive_bytes": archive_bytes,
    }
    print("plain %.1f ms  pycds %.1f ms  ratio %.3f (median of %d pairs)  "
          "modules served %d/%d  archive %s"
          % (result["plain_median_ms"], result["pycds_median_ms"], result["ratio_median"],
             ns.n, served, dumped["modules"], _size(archive_bytes)))
    if ns.json:
        try:
            with open(ns.json, "w", encoding="utf-8") as f:
                json.dump(result, f, indent=2)
                f.write("\n")
        except OSError as exc:
            raise CLIError("cannot write %s: %s" % (ns.json, _msg(exc)))
    return 0


# -- the parser ---------------------------------------------------------------------------

def _parser():
    p = _Parser(prog=PROG, description="pycds: faster CPython start-up by importing "
                "modules' code objects in place from an archive.",
                epilog="Python command lines go after '--', e.g. "
                "'%s run --archive app.img -- app.py --app-option'." % PROG)
    p.add_argument("--version", action="version",
                   version="pycds %s (format %s)" % (pycds.__version__, pycds.FORMAT_VERSION))
    sub = p.add_subparsers(dest="subcommand", metavar="COMMAND", parser_class=_Parser)

    def cmd_arg(sp):
        sp.usage = "%(prog)s [options] -- PYTHON_ARG..."
        sp.add_argument("command", nargs="*", metavar="PYTHON_ARG",
                        help="the Python command line (put it after '--')")

    sp = sub.add_parser("trace", help="run a program, recording the modules it imports",
                        description="Run 'python PYTHON_ARG...' with PYCDSMODE=TRACE: the "
                        "modules it imports are appended to the module list at exit.")
    sp.add_argument("-o", "--output", required=True, metavar="LIST",
                    help="the module list to write (appended to)")
    sp.add_argument("--fresh", action="store_true",
                    help="start a new list instead of appending to an existing one")
    sp.add_argument("-q", "--quiet", action="store_true", help="no summary on stderr")
    cmd_arg(sp)
    sp.set_defaults(func=cmd_trace)

    sp = sub.add_parser("dump", help="write an archive of the modules in a list",
                        description="Write an archive of the modules named in LIST, in a "
                        "fresh interpreter with PYCDSMODE=DUMP. Python options after '--' "
                        "(e.g. -O) are passed to that interpreter; they must match how the "
                        "program is run.")
    sp.add_argument("list", metavar="LIST", help="the module list written by trace")
    sp.add_argument("-o", "--output", required=True, metavar="ARCHIVE",
                    help="the archive to write")
    sp.add_argument("-p", "--path", action="append", default=[], metavar="DIR",
                    help="also look for modules in DIR (e.g. the program's directory; "
                    "the current directory is searched already); repeatable")
    sp.add_argument("-v", "--verbose", action="store_true",
                    help="list the skipped modules with the reasons")
    sp.set_defaults(func=cmd_dump, takes_python_options=True)

    sp = sub.add_parser("run", help="run a program importing from an archive",
                        description="Run 'python PYTHON_ARG...' with PYCDSMODE=SHARE.")
    sp.add_argument("-a", "--archive", required=True, metavar="ARCHIVE",
                    help="the archive to import from")
    sp.add_argument("-v", "--verbose", action="count", default=0,
                    help="one line per served module on stderr (twice: also fall-backs)")
    cmd_arg(sp)
    sp.set_defaults(func=cmd_run)

    sp = sub.add_parser("inspect", help="describe an archive",
                        description="Show an archive's format version, fingerprint, "
                        "modules with their sizes, and whether this interpreter can use it.")
    sp.add_argument("archive", metavar="ARCHIVE")
    sp.add_argument("-n", "--top", type=int, default=20, metavar="N",
                    help="show the N largest modules (default 20)")
    sp.add_argument("--all", action="store_true", help="show all modules")
    sp.add_argument("--json", action="store_true", help="print JSON")
    sp.set_defaults(func=cmd_inspect)

    sp = sub.add_parser("verify", help="check an archive's integrity",
                        description="Fully verify an archive's structure and checksums "
                        "(exit status 0 if intact, 1 otherwise).")
    sp.add_argument("archive", metavar="ARCHIVE")
    sp.set_defaults(func=cmd_verify)

    sp = sub.add_parser("bench", help="measure the start-up gain on a command",
                        description="Trace and dump the command, check that it prints the "
                        "same with and without the archive, then time N alternating pairs "
                        "of runs (plain, pycds) of the whole process.")
    sp.add_argument("-n", type=int, default=21, metavar="N",
                    help="number of timed pairs (default 21)")
    sp.add_argument("--warmup", type=int, default=2, metavar="W",
                    help="untimed pairs first (default 2)")
    sp.add_argument("--workdir", metavar="DIR",
                    help="keep the list and archive in DIR (default: a temporary directory)")
    sp.add_argument("--json", metavar="FILE", help="write the results to FILE as JSON")
    sp.add_argument("--no-check", action="store_true",
                    help="do not require identical output with and without pycds")
    cmd_arg(sp)
    sp.set_defaults(func=cmd_bench)
    return p


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = None
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    parser = _parser()
    try:
        ns = parser.parse_args(argv)
        if ns.subcommand is None:
            raise CLIError("choose a command: trace, dump, run, inspect, verify or bench "
                           "(see %s --help)" % PROG, 2)
        if extra and not hasattr(ns, "command") and not getattr(
                ns, "takes_python_options", False):
            raise CLIError("unexpected arguments after '--': %s" % " ".join(extra), 2)
        if hasattr(ns, "top") and ns.top < 0:
            raise CLIError("--top must not be negative", 2)
        return ns.func(ns, extra)
    except CLIError as exc:
        sys.stderr.write("pycds: error: %s\n" % exc)
        return exc.status
    except (OSError, pycds.PycdsError) as exc:
        sys.stderr.write("pycds: error: %s\n" % _msg(exc))
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("pycds: interrupted\n")
        return 130


def _entry():
    try:
        status = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # Output piped into e.g. head: not an error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        status = 0
    sys.exit(status)


if __name__ == "__main__":
    _entry()
