"""pycds start-up hook, run by ``pycds.pth`` only when ``PYCDSMODE`` is set.

A top-level module, not part of the ``pycds`` package, so that SHARE mode costs one small
import at start-up: it puts a stand-in finder on ``sys.meta_path`` and nothing else. The
package, its native extension and the archive are loaded when the program imports its first
module; a program that imports nothing after start-up (``python -c pass``) does not pay for
them, whatever the archive's size. The other modes run ``pycds._startup``.

Nothing here may break start-up: every failure is one line on stderr.
"""

import os
import sys


def _warn(exc):
    try:
        sys.stderr.write("pycds: warning: %s; importing normally\n" % (exc,))
    except Exception:
        pass


# SHARE mode until the first import: this module itself is the stand-in on sys.meta_path
# (a module object with a ``find_spec`` function is a valid meta-path finder, and using it
# spares the start-up a class creation). On the first module looked up it loads the
# native extension, opens the archive and puts the real finder
# (``pycds._hook.share``) in its place, then answers through it. Modules the
# interpreter's start-up imports after the ``.pth`` files (``sitecustomize``,
# ``usercustomize``, and on 3.13 ``linecache``, which holds the source of ``-c`` code) and
# pycds's own modules do not activate it; they import normally.
_SITE_LATE = ("sitecustomize", "usercustomize", "linecache")

archive = None  # PYCDSARCHIVE
path_hooks = None  # sys.path_hooks as start-up left them (the real finder compares)
done = True  # activated (or never to be): answer nothing
_lock = None


def find_spec(fullname, path=None, target=None):
    """Meta-path hook of the stand-in: activates SHARE on the first import of a module
    that is not the interpreter's own start-up's nor pycds's."""
    if done or fullname in _SITE_LATE or fullname.partition(".")[0] == "pycds":
        return None
    finder = activate()
    return finder.find_spec(fullname, path, target) if finder is not None else None


def activate():
    """Replace the stand-in by the real finder, once (another thread arriving meanwhile
    imports normally); returns the real finder or None."""
    global done
    if _lock is None or not _lock.acquire(False):
        return None
    try:
        if done:
            return None
        done = True
        try:
            from pycds import _hook
        except ImportError as exc:
            # Isolated sub-interpreters cannot load the extension (single-phase
            # initialisation); archives are for the main interpreter only anyway.
            if "subinterpreter" not in str(exc):
                _warn(exc)
            return None
        # The real finder takes the stand-in's place in sys.meta_path (replaced in place:
        # the import system may be iterating over the list right now).
        this = sys.modules.get(__name__)
        return _hook._state["finder"] if _hook.share(archive, _replace=this) else None
    finally:
        _lock.release()


def invalidate_caches():
    """Meta-path protocol: nothing cached before activation."""


def _start():
    global archive, path_hooks, done, _lock
    if os.environ.get("PYCDSMODE", "").strip().upper() != "SHARE":
        __import__("pycds._startup")  # TRACE, DUMP, AUTO (and unknown modes: it says so)
        sys.modules["pycds._startup"]._start()
        return
    archive = os.environ.get("PYCDSARCHIVE")
    if not archive:
        _warn("PYCDSMODE=SHARE needs PYCDSARCHIVE")
        return
    import _thread  # already loaded by the interpreter: no file access
    path_hooks = list(sys.path_hooks)
    _lock = _thread.allocate_lock()
    done = False
    this = sys.modules[__name__]
    # Where the real finder goes: before importlib's PathFinder (after the builtin and
    # frozen importers, whose modules are never in an archive).
    meta_path = sys.meta_path
    for i, f in enumerate(meta_path):
        if getattr(f, "__name__", None) == "PathFinder":
            meta_path.insert(i, this)
            break
    else:
        meta_path.append(this)


try:
    _start()
except ImportError as exc:
    # Isolated sub-interpreters run site (so this file) but cannot load the extension
    # (single-phase initialisation); archives are for the main interpreter only anyway.
    if "subinterpreter" not in str(exc):
        _warn(exc)
except Exception as exc:  # never break interpreter start-up
    try:
        sys.modules["pycds._hook"]._state["error"] = str(exc)  # for python -m pycds dump
    except Exception:
        pass
    _warn(exc)
