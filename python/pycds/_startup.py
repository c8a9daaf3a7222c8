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


def _start():
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
        tty = sys.stderr.isatty()

        def progress(i, n):
            if tty or _hook._verbose():
                sys.stderr.write("pycds: dumped %d/%d modules\n" % (i, n))

        r = _hook.dump(lst, archive, progress=progress)
        for name, why in r["skipped"]:
            if _hook._verbose() or tty:
                sys.stderr.write("pycds: skipped %s: %s\n" % (name, why))
        if _hook._verbose() or tty:
            sys.stderr.write("pycds: wrote %s: %d modules, %d bytes\n"
                             % (archive, r["modules"], r["bytes"]))
    elif mode == "SHARE":
        if not archive:
            raise ValueError("PYCDSMODE=SHARE needs PYCDSARCHIVE")
        _hook.share(archive)
    elif mode == "AUTO":
        if not archive:
            raise ValueError("PYCDSMODE=AUTO needs PYCDSARCHIVE")
        _hook.auto(archive)
    elif mode:
        raise ValueError("unknown PYCDSMODE %r (TRACE, DUMP, SHARE or AUTO)" % mode)


try:
    _start()
except Exception as exc:  # never break interpreter start-up
    try:
        sys.stderr.write("pycds: warning: %s; importing normally\n" % (exc,))
    except Exception:
        pass
