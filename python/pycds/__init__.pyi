"""Type stubs of the ``pycds`` package: the native API (``pycds._pycds``) and the
import hook (``pycds._hook``), which has no annotations of its own (it runs at start-up
and stays free of the ``typing`` import)."""

from collections.abc import Callable
from typing import TypedDict

from ._archive import Archive as Archive, load as load
from ._pycds import (
    FORMAT_VERSION as FORMAT_VERSION,
    CorruptArchiveError as CorruptArchiveError,
    IncompatibleArchiveError as IncompatibleArchiveError,
    PycdsError as PycdsError,
    UnsupportedInterpreterError as UnsupportedInterpreterError,
    UnsupportedObjectError as UnsupportedObjectError,
    __version__ as __version__,
    _LoadStats,
    _StrPath,
    check_interpreter as check_interpreter,
    inspect as inspect,
    save as save,
    verify as verify,
)

__all__ = (
    "Archive",
    "CorruptArchiveError",
    "FORMAT_VERSION",
    "IncompatibleArchiveError",
    "PycdsError",
    "UnsupportedInterpreterError",
    "UnsupportedObjectError",
    "__version__",
    "auto",
    "check_interpreter",
    "dump",
    "inspect",
    "load",
    "save",
    "share",
    "stats",
    "trace",
    "verify",
)

class _DumpResult(TypedDict):
    #: number of modules written
    modules: int
    bytes: int
    heap_bytes: int
    #: ``(module, reason)`` for every listed module not written
    skipped: list[tuple[str, str]]
    #: the ``.pyc`` files of pycds's own start-up modules written because they were
    #: missing or stale (each process with ``PYCDSMODE`` set imports them)
    bytecode_written: list[str]

class _HookStats(TypedDict):
    #: ``"trace"``, ``"share"``, ``"auto"`` or ``None``
    mode: str | None
    archive: str | None
    served: list[str]
    #: ``(module, reason)`` for every archived module imported normally
    fallbacks: list[tuple[str, str]]
    load: _LoadStats | None

def trace(list_path: _StrPath) -> None: ...
def dump(
    list_path: _StrPath,
    archive_path: _StrPath,
    progress: Callable[[int, int], object] | None = None,
) -> _DumpResult: ...
def share(path: _StrPath) -> bool: ...
def auto(archive_path: _StrPath) -> None: ...
def stats() -> _HookStats: ...
