"""Helpers shared by compat/regrtest.py and compat/thirdparty.py (stdlib only).

Not a command: see those two scripts. Everything runs child processes with a clean
environment (no PYCDS*, no PYTHON* variables inherited from the caller), one at a time,
each under a timeout.
"""

import ast
import os
import subprocess
import time

# Runs the Python command given after the stats file path exactly as ``python -m MODULE``
# would (``runpy._run_module_as_main``, sys.path[0] = the current directory), and at exit
# writes pycds.stats() of this process to the stats file. It imports nothing that
# ``python -m`` would not import itself (runpy, atexit are imported by -m too / builtin),
# and writes nothing to stdout or stderr, so it is used identically in every mode: plain,
# TRACE and SHARE runs differ only by their PYCDS* environment variables.
LAUNCHER = r"""
import sys, os, atexit, runpy
_out = sys.argv.pop(1)
_mod = sys.argv.pop(1)
def _pycds_report(_out=_out, sys=sys):
    h = sys.modules.get('pycds._hook')
    st = None
    if h is not None:
        s = h.stats()
        st = {'mode': s['mode'], 'served': list(s['served']),
              'fallbacks': [list(x) for x in s['fallbacks']]}
    try:
        with open(_out, 'w', encoding='utf-8') as f:
            f.write(repr(st))
    except OSError:
        pass
atexit.register(_pycds_report)
sys.path[0] = os.getcwd()
sys.argv[0] = '-m'
del sys, os, atexit
runpy._run_module_as_main(_mod)
"""


def clean_env(extra=None):
    """The caller's environment without PYCDS* / PYTHON* variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PYCDS") and not k.startswith("PYTHON")}
    env.update(extra or {})
    return env


def mode_env(mode, lst=None, archive=None):
    """Environment for one of the modes: ``plain``, ``trace``, ``share``."""
    if mode == "plain":
        return clean_env()
    if mode == "trace":
        return clean_env({"PYCDSMODE": "TRACE", "PYCDSLIST": lst})
    if mode == "share":
        return clean_env({"PYCDSMODE": "SHARE", "PYCDSARCHIVE": archive})
    raise ValueError(mode)


def run(cmd, env, cwd, timeout, log_path=None):
    """Run ``cmd``; returns (returncode or 'TIMEOUT', output text, seconds).

    stdout and stderr go to one file (``log_path``) so that nothing is lost; the child
    gets no stdin. On timeout the whole process group is killed."""
    t0 = time.monotonic()
    log_path = log_path or os.path.join(cwd, "last.log")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, 9)
            except OSError:
                pass
            proc.wait()
            rc = "TIMEOUT"
    with open(log_path, "rb") as f:
        out = f.read().decode("utf-8", "replace")
    return rc, out, time.monotonic() - t0


def launcher_cmd(python, stats_path, module, args):
    return [python, "-c", LAUNCHER, stats_path, module] + list(args)


def read_stats(path):
    try:
        with open(path, encoding="utf-8") as f:
            return ast.literal_eval(f.read())
    except (OSError, ValueError, SyntaxError):
        return None


def dump(python, lst, archive, cwd, timeout=600):
    """PYCDSMODE=DUMP; returns (number of modules written, bytes, output)."""
    env = clean_env({"PYCDSMODE": "DUMP", "PYCDSLIST": lst, "PYCDSARCHIVE": archive,
                     "PYCDSVERBOSE": "1"})
    rc, out, _ = run([python, "-c", "pass"], env, cwd, timeout,
                     os.path.join(cwd, "dump.log"))
    n = size = None
    for line in out.splitlines():
        if line.startswith("pycds: wrote "):
            # pycds: wrote PATH: N modules, B bytes
            tail = line.rsplit(": ", 1)[1].split()
            n, size = int(tail[0]), int(tail[2])
    if rc != 0 or n is None or not os.path.exists(archive):
        raise SystemExit("DUMP failed (rc=%s):\n%s" % (rc, out[-3000:]))
    return n, size, out


def python_info(python):
    out = subprocess.run([python, "-c", "import sys, pycds; print(sys.version.split()[0]);"
                          "print(pycds.__version__); print(sys.prefix)"],
                         env=clean_env(), capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise SystemExit("%s cannot import pycds (install the pycds wheel into it):\n%s"
                         % (python, out.stderr))
    ver, pycds_ver, prefix = out.stdout.split("\n")[:3]
    return {"python": python, "version": ver, "pycds": pycds_ver, "prefix": prefix}


def fmt_secs(s):
    return "%d:%02d" % divmod(int(round(s)), 60)
