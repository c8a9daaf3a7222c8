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
    "archive_path": None,
    "unused_because": None,
    "finder": None,
    "served": [],
    "fallbacks": [],
    "warned": False,
    "trace_list": None,
    "auto_archive": None,
    "auto_reason": None,
    # PYCDSVERBOSE, read when the hook starts serving (per served module it cost ~1 us).
    "verbose": 0,
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
                code = archive.get(fullname)
            except Exception as exc:  # damaged span: fall back for this module
                _fallback(fullname, "archive error: %s" % exc)
                if _state["mode"] != "auto":  # AUTO replaces it at exit
                    _warn("archive %s is damaged (module %s: %s)"
                          % (_state["archive_path"], fullname, exc))
            else:
                if code is None:  # its body ran once already, and was released
                    _fallback(fullname, "module body already ran from the archive")
                elif code.co_filename == self.path:
                    _served(fullname)
                    return code
                else:
                    _fallback(fullname, "archived code has another file name")
        return super().get_code(fullname)

    def exec_module(self, module):
        super().exec_module(module)
        # The body ran: give back the archive's memory of the module's body and class-body
        # code, as a normal import frees them now, if nothing kept any of it (the archive
        # checks their reference counts).
        archive = _state["archive"]
        if archive is not None:
            try:
                archive.release(self.name)
            except Exception as exc:
                _fallback(self.name, "not released: %s" % exc)

    # Equal to the SourceFileLoader a normal import makes for the same module (as specs
    # are compared, e.g. by pydoc.importfile's callers); being a subclass, this __eq__ is
    # tried first from both sides.
    def __eq__(self, other):
        return (isinstance(other, _SourceFileLoader) and self.name == other.name
                and self.path == other.path)

    def __hash__(self):
        return hash(self.name) ^ hash(self.path)


class CDSExtensionLoader(_bext.ExtensionFileLoader):
    """The standard extension-module loader; only records that the archive's module index
    found the module (no ``sys.path`` search)."""

    def create_module(self, spec):
        module = super().create_module(spec)
        _served(spec.name)
        return module

    def __eq__(self, other):
        return (isinstance(other, _bext.ExtensionFileLoader) and self.name == other.name
                and self.path == other.path)

    def __hash__(self):
        return hash(self.name) ^ hash(self.path)


def _served(name):
    _state["served"].append(name)
    if _state["verbose"] >= 1:
        sys.stderr.write("pycds: served %s\n" % name)


def _fallback(name, reason):
    _state["fallbacks"].append((name, reason))
    if _state["verbose"] >= 2:
        sys.stderr.write("pycds: fallback %s: %s\n" % (name, reason))
    return None


def _found_in_other_entry(fullname, entry):
    """Whether the path importer of ``entry`` (not a directory: a zip file, ...) finds a
    module or regular package ``fullname`` (the archived one would then be shadowed)."""
    finder = _bext.PathFinder._path_importer_cache(entry)
    if finder is None:
        return False
    try:
        spec = finder.find_spec(fullname)
    except Exception:
        return True
    return spec is not None and spec.loader is not None


def _install_finder(finder):
    meta_path = sys.meta_path
    for i, f in enumerate(meta_path):
        if f is _bext.PathFinder or getattr(f, "__name__", None) == "PathFinder":
            meta_path.insert(i, finder)
            return
    meta_path.append(finder)


def share(path, _replace=None):
    """Serve modules from the archive at ``path``; returns whether it is in use.

    Any problem with the archive (missing, truncated, corrupt, for another interpreter)
    gives one warning on stderr and leaves imports untouched. (``_replace``: the start-up
    stand-in whose place in ``sys.meta_path`` the finder takes.)
    """
    _state["verbose"] = _verbose()
    try:
        # Objects were checked when the archive was written; PYCDS_CHECK=full checks them
        # again at every load (integrity is always verified).
        check = os.environ.get("PYCDS_CHECK", "").strip().lower() == "full"
        archive = _pycds.load(os.fspath(path), check)
        finder = _pycds.Finder(archive, CDSLoader, CDSExtensionLoader, _fallback,
                               _found_in_other_entry, getattr(_replace, "path_hooks", None))
    except _pycds._CompilerFlagsMismatch as exc:
        # This interpreter, run with other compiler flags (e.g. a child started with
        # -X no_debug_ranges): the archive is simply not for this process, as with -O.
        _state["unused_because"] = str(exc)
        if _state["verbose"] >= 2:
            sys.stderr.write("pycds: not using archive %s: %s\n" % (os.fspath(path), exc))
        return False
    except Exception as exc:
        _warn("cannot use archive %s: %s" % (os.fspath(path), exc))
        return False
    _state["archive"] = archive
    # A str (the native archive's ``path`` is a ``pathlib.Path``: not to be built while
    # an import is in progress).
    _state["archive_path"] = os.fspath(path)
    _state["finder"] = finder
    _state["mode"] = "share"
    if _replace is not None and _replace in sys.meta_path:
        sys.meta_path[sys.meta_path.index(_replace)] = finder
    else:
        _install_finder(finder)
    return True


# -- TRACE ----------------------------------------------------------------------------

def _traced_modules():
    out = []
    for name, mod in list(sys.modules.items()):
        if name == "__main__" or mod is None or name.partition(".")[0] == "pycds":
            continue  # (pycds's own modules are imported to serve the others)
        spec = getattr(mod, "__spec__", None)
        if spec is None or spec.origin is None or not spec.has_location:
            continue
        if isinstance(spec.loader, _SourceFileLoader):
            if not spec.origin.endswith(".py"):
                continue
        elif not isinstance(spec.loader, _bext.ExtensionFileLoader):
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

def _find_spec(name, memo):
    """The spec a normal import would find for ``name`` (through ``sys.path`` and the
    parents' ``__path__``), found without importing anything: a parent package not imported
    yet is looked up, not executed (``memo`` caches the specs of parents). The SHARE finder
    checks again at import time that a normal import finds the same file."""
    if name in memo:
        return memo[name]
    parent, _, _ = name.rpartition(".")
    if not parent:
        spec = _bext.PathFinder.find_spec(name)
    else:
        pmod = sys.modules.get(parent)
        if pmod is not None:
            path = getattr(pmod, "__path__", None)
        else:
            pspec = _find_spec(parent, memo)
            path = pspec.submodule_search_locations if pspec is not None else None
        spec = _bext.PathFinder.find_spec(name, path) if path is not None else None
    memo[name] = spec
    return spec


def _module_item(name, memo=None):
    """``(name, value, meta)`` for an importable source or extension module, or a reason
    why it cannot be archived. ``value`` is a code object freshly unmarshalled from the
    ``.pyc`` (never executed; ``None`` for extension modules, of which only the location is
    recorded). Nothing is imported or executed."""
    try:
        spec = _find_spec(name, {} if memo is None else memo)
    except BaseException as exc:
        return "find_spec failed: %s: %s" % (type(exc).__name__, exc)
    if spec is None:
        return "not found"
    is_ext = isinstance(spec.loader, _bext.ExtensionFileLoader)
    if not (isinstance(spec.loader, _SourceFileLoader) or is_ext) or not spec.has_location:
        return "not a source or extension module (%s)" % type(spec.loader).__name__
    origin = spec.origin
    is_pkg = spec.submodule_search_locations is not None
    if is_ext and is_pkg:
        return "extension module as a package"
    try:
        st = os.stat(origin)
        code = None if is_ext else spec.loader.get_code(name)
    except BaseException as exc:
        return "cannot read code: %s: %s" % (type(exc).__name__, exc)
    if code is None and not is_ext:
        return "no code"
    locations = list(spec.submodule_search_locations or ())
    if not all(isinstance(p, str) for p in locations):
        return "package __path__ is not a list of directories"
    # (The directory a normal import searched to find it, a sys.path entry or an entry of
    # the parent's __path__, is the origin's directory, or its parent for a package: the
    # metadata derives it.)
    kind = "extension" if is_ext else "package" if is_pkg else "module"
    cached = spec.cached if sys.pycache_prefix is None and not is_ext else None
    try:
        meta = _pycds.module_meta(kind, sys.flags.optimize, st.st_mtime_ns, st.st_size,
                                  origin, cached, locations)
    except ValueError as exc:
        return "cannot record its location: %s" % exc
    return (name, code, meta)


def dump(list_path, archive_path, progress=None):
    """Write an archive of the modules named in ``list_path`` (one per line).

    Modules that cannot be found or read are reported and skipped; ``__main__`` is never
    dumped and nothing is imported or executed (modules are found as a normal import would
    find them, and their code read from the ``.pyc``). The archive is published atomically.
    Returns statistics.
    """
    with open(list_path, encoding="utf-8") as f:
        names = list(dict.fromkeys(line.strip() for line in f if line.strip()))
    items, skipped, memo = [], [], {}
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    total = len(names)
    import gc
    enabled = gc.isenabled()
    gc.disable()  # a batch of long-lived objects: collections would only slow it down
    try:
        _dump_items(names, main_file, progress, items, skipped, memo, total)
        result = _pycds.write_archive(os.fspath(archive_path), items, strict=False, fresh=False,
                                      split=True)
    finally:
        if enabled:
            gc.enable()
    skipped.extend(tuple(x) for x in result["skipped"])
    result["skipped"] = skipped
    result["modules"] = result.pop("roots")
    result["bytecode_written"] = _write_own_bytecode()
    return result


# The modules pycds itself runs at the start of every process with PYCDSMODE set.
_OWN_START_MODULES = ("_pycds_boot", "pycds", "pycds._hook", "pycds._startup")


def _own_pyc_is_current(name, source, cached):
    """Whether the import system would use ``cached`` for ``source``: the checks of
    ``SourceLoader.get_code``, with importlib's own helpers (magic number and flags, then the
    source's mtime and size or, as ``--check-hash-based-pycs`` says, its hash)."""
    import _imp
    details = {"name": name, "path": cached}
    try:
        with open(cached, "rb") as f:
            data = f.read(16)
        flags = _bext._classify_pyc(data, name, details)
        if not flags & 0b1:
            st = os.stat(source)
            _bext._validate_timestamp_pyc(data, int(st.st_mtime), st.st_size, name, details)
        elif _imp.check_hash_based_pycs != "never" and (
                flags & 0b10 or _imp.check_hash_based_pycs == "always"):
            with open(source, "rb") as f:
                source_hash = _imp.source_hash(_bext._RAW_MAGIC_NUMBER, f.read())
            _bext._validate_hash_pyc(data, source_hash, name, details)
    except (ImportError, EOFError, OSError):
        return False
    return True


def _write_own_bytecode():
    """Write the ``.pyc`` of pycds's own start-up modules where it is missing or stale.

    Every process with ``PYCDSMODE`` set imports them before the archive is open, so they
    cannot be served from it; without a ``.pyc`` each start compiles them (the first
    ``compile()`` of a process also creates the ``ast`` types; figures:
    ``benches/startup/own_bytecode.py``). That happens where the package was installed
    without compiling (``uv pip install`` without ``--compile-bytecode``,
    ``pip install --no-compile``) and bytecode is never written at run time
    (``PYTHONDONTWRITEBYTECODE``, a read-only ``site-packages``); the DUMP step often runs
    where the install did (an image build), so it writes them once, atomically and only
    where the import system would not use the existing file. Returns the paths written;
    a location that cannot be written is left as it is."""
    import importlib.util
    import py_compile
    written = []
    for name in _OWN_START_MODULES:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        if (spec is None or not spec.has_location or spec.cached is None
                or not (spec.origin or "").endswith(".py")):
            continue
        try:
            if _own_pyc_is_current(name, spec.origin, spec.cached):
                continue
            # py_compile writes to a temporary file and renames it over the target.
            py_compile.compile(spec.origin, cfile=spec.cached, doraise=True)
        except (OSError, py_compile.PyCompileError) as exc:
            if _verbose() >= 1:
                sys.stderr.write("pycds: cannot write %s: %s\n" % (spec.cached, exc))
            continue
        written.append(spec.cached)
    return written


def _dump_items(names, main_file, progress, items, skipped, memo, total):
    for i, name in enumerate(names, 1):
        if name == "__main__":
            continue
        r = _module_item(name, memo)
        if isinstance(r, str):
            skipped.append((name, r))
            continue
        if main_file and _pycds.decode_module_meta(r[2])["origin"] == os.path.abspath(main_file):
            skipped.append((name, "is the __main__ script"))
            continue
        items.append(r)
        if progress and (i % 100 == 0 or i == total):
            progress(i, total)


# -- AUTO -----------------------------------------------------------------------------

def _auto_exit(archive_path):
    reason = _state["auto_reason"]
    if reason is None and not any(r in ("source file changed", "source file missing")
                                  or r.startswith("archive error")
                                  for _, r in _state["fallbacks"]):
        return
    names = _traced_modules()
    items, memo = [], {}
    for name in names:
        r = _module_item(name, memo)
        if not isinstance(r, str):
            items.append(r)
    try:
        _pycds.write_archive(archive_path, items, strict=False, fresh=False,
                             split=True)
        _write_own_bytecode()
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
        if not ok and _state["unused_because"] is None:
            # (An archive of this interpreter under other compiler flags is left alone:
            # the processes that use it would only replace it back.)
            _state["auto_reason"] = "unusable"
    else:
        _state["auto_reason"] = "missing"
    _state["mode"] = "auto"
    atexit.register(_auto_exit, archive_path)


def stats():
    """What the hook did in this process: mode, served modules, fall-backs with their
    reasons, and the archive's load statistics."""
    boot = sys.modules.get("_pycds_boot")
    if boot is not None:
        boot.activate()  # SHARE not yet activated (nothing imported since start-up); else a no-op
    archive = _state["archive"]
    return {
        "mode": _state["mode"],
        "archive": _state["archive_path"],
        "unused_because": _state["unused_because"],
        "served": list(_state["served"]),
        "fallbacks": list(_state["fallbacks"]),
        "load": archive.stats() if archive is not None else None,
    }
