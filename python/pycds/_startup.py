"""Run by ``pycds.pth`` at interpreter start-up, only when ``PYCDSMODE`` is set.

Environment (compatible with the C ``code-data-share`` package):

* ``PYCDSMODE``: ``TRACE``, ``DUMP``, ``SHARE`` or ``AUTO`` (case-insensitive);
* ``PYCDSLIST``: the module list (TRACE writes it, DUMP reads it);
* ``PYCDSARCHIVE``: the archive (DUMP writes it, SHARE and AUTO read it);
* ``PYCDSVERBOSE``: 1 = one line per served module, 2 = also one per fall-back.

Nothing here may break start-up: every failure is one line on stderr.
"""

import os
import sys


def _path0():
    """The entry the interpreter will put at ``sys.path[0]`` once start-up is over (it is
    not there yet while ``.pth`` files run), or ``None`` (``-P`` / ``PYTHONSAFEPATH``).

    DUMP runs during start-up but must find modules the way the program will: the
    script's directory, or the current directory for ``-c``, ``-m`` and the REPL."""
    if sys.flags.safe_path:
        return None
    arg0 = sys.argv[0] if sys.argv else ""
    if arg0 == "-m":
        return os.getcwd()
    if arg0 in ("", "-c", "-"):
        return ""
    if os.path.isdir(arg0):
        return arg0
    return os.path.dirname(os.path.realpath(arg0))


def _dump(lst, archive):
    from . import _hook
    tty = sys.stderr.isatty()

    def progress(i, n):
        if tty or _hook._verbose():
            sys.stderr.write("pycds: dumped %d/%d modules\n" % (i, n))

    path0 = _path0()
    if path0 is not None:
        sys.path.insert(0, path0)
    try:
        r = _hook.dump(lst, archive, progress=progress)
    except Exception as exc:
        raise RuntimeError("DUMP failed: %s" % (exc,)) from None
    finally:
        if path0 is not None and sys.path and sys.path[0] == path0:
            del sys.path[0]
    _hook._state["dump"] = r  # for ``python -m pycds dump``
    for name, why in r["skipped"]:
        if _hook._verbose() or tty:
            sys.stderr.write("pycds: skipped %s: %s\n" % (name, why))
    if _hook._verbose() or tty:
        sys.stderr.write("pycds: wrote %s: %d modules, %d bytes\n"
                         % (archive, r["modules"], r["bytes"]))


def _warn(exc):
    try:
        sys.stderr.write("pycds: warning: %s; importing normally\n" % (exc,))
    except Exception:
        pass


class _ShareOnFirstImport:
    """SHARE mode until the first import: a meta-path stand-in that loads the native
    extension, opens the archive and installs the real finder (``pycds._hook.share``) when
    the first module is looked up, then answers through it. A program that imports nothing
    after start-up (``python -c pass``) does not pay for the archive. Modules the
    interpreter's start-up imports after the ``.pth`` files (``sitecustomize``,
    ``usercustomize``, and on 3.13 ``linecache``) and pycds's own modules do not activate
    it; they import normally."""

    # Imported by the interpreter's own start-up after the .pth files: site's customize
    # modules, and on 3.13 linecache (which holds the source of -c code).
    _SITE_LATE = ("sitecustomize", "usercustomize", "linecache")

    def __init__(self, archive):
        import _thread
        self.archive = archive
        self.path_hooks = list(sys.path_hooks)  # as start-up left them
        self.lock = _thread.allocate_lock()
        self.done = False

    def find_spec(self, fullname, path=None, target=None):
        if self.done or fullname in self._SITE_LATE or fullname.partition(".")[0] == "pycds":
            return None
        finder = self.activate()
        return finder.find_spec(fullname, path, target) if finder is not None else None

    def activate(self):
        """Replace this stand-in by the real finder, once (another thread arriving
        meanwhile imports normally); returns the real finder or None."""
        if not self.lock.acquire(False):
            return None
        try:
            if self.done:
                return None
            self.done = True
            try:
                from . import _hook
            except ImportError as exc:
                # Isolated sub-interpreters cannot load the extension (single-phase
                # initialisation); archives are for the main interpreter only anyway.
                if "subinterpreter" not in str(exc):
                    _warn(exc)
                return None
            # The real finder takes this one's place in sys.meta_path (replaced in place:
            # the import system may be iterating over the list right now).
            return _hook._state["finder"] if _hook.share(self.archive, _replace=self) else None
        finally:
            self.lock.release()

    def invalidate_caches(self):
        pass


_pending = None  # the SHARE stand-in until it activates


def _start():
    global _pending
    mode = os.environ.get("PYCDSMODE", "").strip().upper()
    lst = os.environ.get("PYCDSLIST")
    archive = os.environ.get("PYCDSARCHIVE")
    if mode == "SHARE":
        if not archive:
            raise ValueError("PYCDSMODE=SHARE needs PYCDSARCHIVE")
        _pending = _ShareOnFirstImport(archive)
        # Where the real finder goes: before importlib's PathFinder (after the builtin and
        # frozen importers, whose modules are never in an archive).
        meta_path = sys.meta_path
        for i, f in enumerate(meta_path):
            if getattr(f, "__name__", None) == "PathFinder":
                meta_path.insert(i, _pending)
                break
        else:
            meta_path.append(_pending)
        return
    from . import _hook
    if mode == "TRACE":
        if not lst:
            raise ValueError("PYCDSMODE=TRACE needs PYCDSLIST")
        _hook.trace(lst)
    elif mode == "DUMP":
        if not lst or not archive:
            raise ValueError("PYCDSMODE=DUMP needs PYCDSLIST and PYCDSARCHIVE")
        _dump(lst, archive)
    elif mode == "AUTO":
        if not archive:
            raise ValueError("PYCDSMODE=AUTO needs PYCDSARCHIVE")
        _hook.auto(archive)
    elif mode:
        raise ValueError("unknown PYCDSMODE %r (TRACE, DUMP, SHARE or AUTO)" % mode)


try:
    _start()
except ImportError as exc:
    # Isolated sub-interpreters run site (so this file) but cannot load the extension
    # (single-phase initialisation); archives are for the main interpreter only anyway.
    if "subinterpreter" not in str(exc):
        _warn(exc)
except Exception as exc:  # never break interpreter start-up
    try:
        sys.modules["pycds._hook"]._state["error"] = str(exc)
    except Exception:
        pass
    try:
        sys.stderr.write("pycds: warning: %s; importing normally\n" % (exc,))
    except Exception:
        pass
