"""Type stubs of the native module ``pycds._pycds`` (crates/pyhook/src/api.rs)."""

import os
import pathlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from importlib.machinery import ModuleSpec
from typing import Literal, TypedDict, final

__all__ = [
    "write_archive",
    "save",
    "load",
    "verify",
    "inspect",
    "check_interpreter",
    "module_meta",
    "decode_module_meta",
    "Archive",
    "Finder",
    "PycdsError",
    "CorruptArchiveError",
    "IncompatibleArchiveError",
    "UnsupportedObjectError",
    "UnsupportedInterpreterError",
    "FORMAT_VERSION",
    "__version__",
]

_StrPath = str | os.PathLike[str]

__version__: str
#: The archive format version this build writes and reads, as ``"MAJOR.MINOR"``.
FORMAT_VERSION: str

class PycdsError(Exception):
    """Base class of every error pycds raises."""

class CorruptArchiveError(PycdsError):
    """The archive is damaged: truncated, bit flips, malformed tables or objects."""

class IncompatibleArchiveError(PycdsError):
    """The archive is intact but belongs to another interpreter build or format version."""

class UnsupportedObjectError(PycdsError):
    """An object of a type pycds cannot archive (the message names the root and path)."""

class UnsupportedInterpreterError(PycdsError):
    """The running interpreter is not one pycds supports."""

class _WriteStats(TypedDict):
    roots: int
    bytes: int
    heap_bytes: int
    skipped: list[tuple[str, str]]

class _LoadStats(TypedDict):
    spans: int
    objects: int
    #: interned strings created and interned (one per distinct string the spans use)
    interned: int
    load_seconds: float
    #: of which checking objects (``check=True``) or planning fix-ups
    check_seconds: float
    #: of which frozensets and code versions (interned strings are made while relocating)
    fixup_seconds: float
    #: modules' body and class-body code given back once the body ran (``Archive.release``)
    released: int
    #: bytes of memory given back with them
    released_bytes: int
    #: bodies kept because something still held their code after it ran
    kept: int

class _ModuleMeta(TypedDict):
    kind: Literal["module", "package", "extension"]
    optimize: int
    mtime_ns: int
    size: int
    origin: str
    entry: str
    cached: str | None
    locations: list[str]

class _VerifyResult(TypedDict):
    python: str
    roots: int
    spans: int
    objects: int

class _InspectResult(TypedDict):
    format_version: str
    producer: str
    file_bytes: int
    heap_bytes: int
    fingerprint: str
    #: ``None`` if this interpreter can use the archive, else why not.
    refused_because: str | None
    #: ``(name, span bytes, metadata)`` per root, in archive order.
    roots: list[tuple[str, int, bytes]]

class _InterpreterInfo(TypedDict):
    python: str
    fingerprint: str
    code_versions_reserved: bool

@final
class Archive:
    """The native archive object (``pycds.Archive`` wraps it as a full ``Mapping``).
    Roots are loaded on first access and live as long as the process."""

    def __new__(cls, path: _StrPath, check: bool = True) -> Archive: ...
    def __getitem__(self, name: str, /) -> object: ...
    def get(self, name: str, default: object = None) -> object: ...
    def __contains__(self, name: str, /) -> bool: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[str]: ...
    def keys(self) -> list[str]: ...
    def meta(self, name: str) -> bytes | None: ...
    @property
    def path(self) -> pathlib.Path: ...
    def stats(self) -> _LoadStats: ...
    def release(self, name: str) -> bool: ...

def write_archive(
    path: _StrPath,
    items: Sequence[tuple[str, object, bytes]],
    strict: bool = True,
    fresh: bool = True,
    split: bool = False,
) -> _WriteStats: ...
def save(path: _StrPath, roots: Mapping[str, object]) -> None: ...
def load(path: _StrPath, check: bool = True) -> Archive: ...
def verify(path: _StrPath) -> _VerifyResult: ...
def inspect(path: _StrPath) -> _InspectResult: ...
def check_interpreter() -> _InterpreterInfo: ...
def module_meta(
    kind: Literal["module", "package", "extension"],
    optimize: int,
    mtime_ns: int,
    size: int,
    origin: _StrPath,
    cached: _StrPath | None,
    locations: list[_StrPath],
) -> bytes: ...
def decode_module_meta(meta: bytes) -> _ModuleMeta: ...

@final
class Finder:
    """The SHARE-mode meta-path finder (installed by ``pycds.share``)."""

    def __new__(
        cls,
        archive: Archive,
        loader: type,
        extension_loader: type,
        on_fallback: Callable[[str, str], object],
        on_other_entry: Callable[[str, str], bool],
        path_hooks: list[object] | None = None,
    ) -> Finder: ...
    def find_spec(
        self, fullname: str, path: Iterable[str] | None = None, target: object = None
    ) -> ModuleSpec | None: ...
    def invalidate_caches(self) -> None: ...
    @property
    def archive(self) -> Archive: ...
