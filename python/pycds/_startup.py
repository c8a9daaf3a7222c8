"""Run at interpreter start-up by ``pycds.pth`` (through ``_pycds_boot``) when
``PYCDSMODE`` is TRACE, DUMP or AUTO; SHARE is set up by ``_pycds_boot`` alone.

Environment (compatible with the C ``code-data-share`` package):

* ``PYCDSMODE``: ``TRACE``, ``DUMP``, ``SHARE`` or ``AUTO`` (case-insensitive);
* ``PYCDSLIST``: the module list (TRACE writes it, DUMP reads it);
* ``PYCDSARCHIVE``: the archive (DUMP writes it, SHARE and AUTO read it);
* ``PYCDSVERBOSE``: 1 = one line per served module, 2 = also one per fall-back.

Nothing here may break start-up: ``_pycds_boot`` reports any exception as one line on stderr.
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
        for pyc in r["bytecode_written"]:
            sys.stderr.write("pycds: wrote %s (pycds's own start-up code)\n" % (pyc,))


def _start():
    """Run the mode of ``PYCDSMODE`` (called by ``_pycds_boot``, which turns any exception
    into one warning line)."""
    mode = os.environ.get("PYCDSMODE", "").strip().upper()
    lst = os.environ.get("PYCDSLIST")
    archive = os.environ.get("PYCDSARCHIVE")
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

