"""The importlib side of pycds: trace, dump, share and auto modes.

Kept free of heavy imports: it runs at interpreter start-up from ``pycds.pth`` when
``PYCDSMODE`` is set. Only modules that are already loaded at that point (``sys``,
``os``, the frozen importlib bootstrap) are imported at module level.
"""

import os
import sys
import _frozen_importlib_external as _bext

from . import _pycds

__all__ = ("trace", "dump", "share", "auto", "stats")

_SourceFileLoader = _bext.SourceFileLoader

# Process-wide state of the hook.
_state: dict = {
    "mode": None,
    "archive": None,
    "finder": None,
    "served": [],
    "fallbacks": [],
    "warned": False,
    "trace_list": None,
    "auto_archive": None,
    "auto_reason": None,
}


def _verbose():
    try:
        return int(os.environ.get("PYCDSVERBOSE", "0") or 0)
    except ValueError:
        return 0


def _warn(message):
    """One line on stderr, once per process (never raises, even under ``-W error``)."""
    if _state["warned"]:
        return
    _state["warned"] = True
    try:
        sys.stderr.write("pycds: warning: %s; importing normally\n" % message)
    except Exception:
        pass


# -- module metadata stored with each archived module ---------------------------------

# Fields, NUL-separated: source mtime (ns), source size, flags, origin, sys.path entry,
# then the package's __path__ entries. Flags: "1"/"0" (package or not) followed by the
# optimization level (-O, -OO) the code was compiled for.

def _encode_meta(origin, mtime_ns, size, is_pkg, locations, entry, optimize=0):
    flags = ("1" if is_pkg else "0") + str(optimize)
    fields = [str(mtime_ns), str(size), flags, origin, entry or ""]
    fields.extend(locations or ())
    return b"\0".join(os.fsencode(f) for f in fields)


def _decode_meta(meta):
    """``(origin, mtime_ns, size, is_pkg, locations, entry, optimize)``."""
    parts = [os.fsdecode(p) for p in meta.split(b"\0")]
    if len(parts) < 5 or not parts[2]:
        raise ValueError("bad module metadata")
    flags = parts[2]
    return (parts[3], int(parts[0]), int(parts[1]), flags[0] == "1", parts[5:], parts[4],
            int(flags[1:] or 0))


# -- SHARE: finder and loader ----------------------------------------------------------

class CDSLoader(_SourceFileLoader):
    """A source-file loader whose ``get_code`` returns the archived code object.

    Everything else (``get_source``, ``get_data``, ``get_filename``, ``is_package``,
    ``get_resource_reader``) is the standard ``SourceFileLoader``'s, so ``inspect``,
    ``linecache``, tracebacks, ``importlib.resources``, ``pkgutil`` and ``runpy`` behave
    exactly as with a normal import.
    """

    def get_code(self, fullname):
        archive = _state["archive"]
        if archive is not None and fullname == self.name:
            try:
                code = archive[fullname]
            except Exception as exc:  # damaged span: fall back for this module
                _fallback(fullname, "archive error: %s" % exc)
                if _state["mode"] != "auto":  # AUTO replaces it at exit
                    _warn("archive %s is damaged (module %s: %s)"
                          % (os.fspath(archive.path), fullname, exc))
            else:
                if code.co_filename == self.path:
                    _state["served"].append(fullname)
                    if _verbose() >= 1:
                        sys.stderr.write("pycds: served %s\n" % fullname)
                    return code
                _fallback(fullname, "archived code has another file name")
        return super().get_code(fullname)


def _fallback(name, reason):
    _state["fallbacks"].append((name, reason))
    if _verbose() >= 2:
        sys.stderr.write("pycds: fallback %s: %s\n" % (name, reason))
    return None


class CDSFinder:
    """Meta-path finder answering ``find_spec`` from the archive's module index.

    A module is served only when its source file is where, and as, it was at dump time
    (same size and modification time, as ``.pyc`` validation does), and when a normal
    import would find that same file (its directory is on ``sys.path`` or on the parent
    package's ``__path__``, with no other module of that name earlier on the path).
    """

    def __init__(self, archive):
        self._archive = archive

    def find_spec(self, fullname, path=None, target=None):
        meta = self._archive.meta(fullname)
        if meta is None:
            return None
        try:
            origin, mtime_ns, size, is_pkg, locations, entry, optimize = _decode_meta(meta)
        except ValueError:
            return _fallback(fullname, "bad metadata")
        if optimize != sys.flags.optimize:
            # Code compiled for another -O level (asserts, __debug__, docstrings differ).
            return _fallback(fullname, "dumped for optimization level %d" % optimize)
        if path is None:
            search = sys.path
        else:
            try:
                search = list(path)
            except TypeError:
                return _fallback(fullname, "parent __path__ is not iterable")
        idx = _index_of_entry(search, entry)
        if idx is None:
            return _fallback(fullname, "not on the search path (%s)" % entry)
        if idx and _shadowed(fullname, search[:idx]):
            return _fallback(fullname, "shadowed by a module earlier on the path")
        try:
            st = os.stat(origin)
        except OSError:
            return _fallback(fullname, "source file missing")
        if st.st_mtime_ns != mtime_ns or st.st_size != size:
            return _fallback(fullname, "source file changed")
        loader = CDSLoader(fullname, origin)
        return _bext.spec_from_file_location(
            fullname, origin, loader=loader,
            submodule_search_locations=locations if is_pkg else None)

    def invalidate_caches(self):
        pass


def _index_of_entry(search, entry):
    for i, e in enumerate(search):
        if not isinstance(e, str):
            continue
        if e == entry or _abspath(e) == entry:
            return i
    return None


_abs_cache: dict = {}


def _abspath(p):
    if not p:
        # "" is the current directory at import time (the program may chdir).
        try:
            return os.getcwd()
        except OSError:
            return None
    r = _abs_cache.get(p)
    if r is None:
        r = _abs_cache[p] = os.path.abspath(p) if not os.path.isabs(p) else p
    return r


def _shadowed(fullname, earlier):
    for e in earlier:
        if not isinstance(e, str):
            continue
        finder = _bext.PathFinder._path_importer_cache(e)
        if finder is None:
            continue
        try:
            spec = finder.find_spec(fullname)
        except Exception:
            return True
        if spec is not None and (spec.loader is not None or spec.submodule_search_locations):
            return True
    return False


def _install_finder(finder):
    meta_path = sys.meta_path
    for i, f in enumerate(meta_path):
        if f is _bext.PathFinder or getattr(f, "__name__", None) == "PathFinder":
            meta_path.insert(i, finder)
            return
    meta_path.append(finder)


def share(path):
    """Serve modules from the archive at ``path``; returns whether it is in use.

    Any problem with the archive (missing, truncated, corrupt, for another interpreter)
    gives one warning on stderr and leaves imports untouched.
    """
    try:
        archive = _pycds.load(os.fspath(path))
    except Exception as exc:
        _warn("cannot use archive %s: %s" % (os.fspath(path), exc))
        return False
    _state["archive"] = archive
    finder = CDSFinder(archive)
    _state["finder"] = finder
    _state["mode"] = "share"
    _install_finder(finder)
    return True


# -- TRACE ----------------------------------------------------------------------------

def _traced_modules():
    out = []
    for name, mod in list(sys.modules.items()):
        if name == "__main__" or mod is None:
            continue
        spec = getattr(mod, "__spec__", None)
        if spec is None or spec.origin is None or not spec.has_location:
            continue
        if not isinstance(spec.loader, _SourceFileLoader):
            continue
        if not spec.origin.endswith(".py"):
            continue
        if getattr(mod, "__name__", None) != name or spec.name != name:
            continue
        out.append(name)
    return out


def _write_trace(list_path):
    names = _traced_modules()
    try:
        with open(list_path, "a+", encoding="utf-8") as f:
            f.seek(0)
            known = set(f.read().split())
            new = [n for n in names if n not in known]
            if new:
                f.write("".join(n + "\n" for n in new))
    except OSError as exc:
        _warn("cannot write module list %s: %s" % (list_path, exc))


def trace(list_path):
    """Record the modules this process imports from source files into ``list_path``
    (appended at exit; the file is opened only then)."""
    import atexit
    # Absolute now: the program may change directory before exit.
    list_path = os.path.abspath(os.fspath(list_path))
    _state["mode"] = "trace"
    _state["trace_list"] = list_path
    atexit.register(_write_trace, list_path)


# -- DUMP -----------------------------------------------------------------------------

def _module_item(name):
    """``(name, fresh code, meta)`` for an importable source module, or a reason."""
    import importlib.util
    try:
        spec = importlib.util.find_spec(name)
    except BaseException as exc:  # import of a parent failed
        return "find_spec failed: %s: %s" % (type(exc).__name__, exc)
    if spec is None:
        return "not found"
    if not isinstance(spec.loader, _SourceFileLoader) or not spec.has_location:
        return "not a source module (%s)" % type(spec.loader).__name__
    origin = spec.origin
    try:
        st = os.stat(origin)
        code = spec.loader.get_code(name)
    except BaseException as exc:
        return "cannot read code: %s: %s" % (type(exc).__name__, exc)
    if code is None:
        return "no code"
    is_pkg = spec.submodule_search_locations is not None
    locations = list(spec.submodule_search_locations or ())
    if not all(isinstance(p, str) for p in locations):
        return "package __path__ is not a list of directories"
    # The directory a normal import searched to find it: a sys.path entry for top-level
    # modules, an entry of the parent's __path__ for submodules.
    entry = os.path.dirname(origin)
    if is_pkg:
        entry = os.path.dirname(entry)
    meta = _encode_meta(origin, st.st_mtime_ns, st.st_size, is_pkg, locations, entry,
                        sys.flags.optimize)
    return (name, code, meta)


def dump(list_path, archive_path, progress=None):
    """Write an archive of the modules named in ``list_path`` (one per line).

    Modules that cannot be found or read are reported and skipped; ``__main__`` is never
    dumped and no listed module is executed (only parent packages are imported, to find
    submodules). The archive is published atomically. Returns statistics.
    """
    with open(list_path, encoding="utf-8") as f:
        names = list(dict.fromkeys(line.strip() for line in f if line.strip()))
    items, skipped = [], []
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    total = len(names)
    for i, name in enumerate(names, 1):
        if name == "__main__":
            continue
        r = _module_item(name)
        if isinstance(r, str):
            skipped.append((name, r))
            continue
        if main_file and _decode_meta(r[2])[0] == os.path.abspath(main_file):
            skipped.append((name, "is the __main__ script"))
            continue
        items.append(r)
        if progress and (i % 100 == 0 or i == total):
            progress(i, total)
    result = _pycds.write_archive(os.fspath(archive_path), items, strict=False)
    skipped.extend(tuple(x) for x in result["skipped"])
    result["skipped"] = skipped
    result["modules"] = result.pop("roots")
    return result


# -- AUTO -----------------------------------------------------------------------------

def _auto_exit(archive_path):
    reason = _state["auto_reason"]
    if reason is None and not any(r in ("source file changed", "source file missing")
                                  or r.startswith("archive error")
                                  for _, r in _state["fallbacks"]):
        return
    names = _traced_modules()
    items = []
    for name in names:
        r = _module_item(name)
        if not isinstance(r, str):
            items.append(r)
    try:
        _pycds.write_archive(archive_path, items, strict=False)
        if _verbose() >= 1:
            sys.stderr.write("pycds: wrote %s (%d modules)\n" % (archive_path, len(items)))
    except Exception as exc:
        _warn("cannot write archive %s: %s" % (archive_path, exc))


def auto(archive_path):
    """Share from ``archive_path`` if it is usable; otherwise run normally and publish a
    fresh archive at exit (atomically, so concurrent processes never see a partial file).
    An archive some of whose modules changed is re-dumped at exit as well."""
    import atexit
    # Absolute now: the program may change directory before exit.
    archive_path = os.path.abspath(os.fspath(archive_path))
    _state["auto_archive"] = archive_path
    if os.path.exists(archive_path):
        _state["warned"] = True  # a stale or foreign archive is simply replaced
        ok = share(archive_path)
        _state["warned"] = False
        if not ok:
            _state["auto_reason"] = "unusable"
    else:
        _state["auto_reason"] = "missing"
    _state["mode"] = "auto"
    atexit.register(_auto_exit, archive_path)


def stats():
    """What the hook did in this process: mode, served modules, fall-backs with their
    reasons, and the archive's load statistics."""
    archive = _state["archive"]
    return {
        "mode": _state["mode"],
        "archive": os.fspath(archive.path) if archive is not None else None,
        "served": list(_state["served"]),
        "fallbacks": list(_state["fallbacks"]),
        "load": archive.stats() if archive is not None else None,
    }
