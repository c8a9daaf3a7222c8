"""pycds: faster CPython start-up by importing code objects in place from an archive.

See the README for the TRACE / DUMP / SHARE workflow and ``python -m pycds --help``.
"""

from ._pycds import (
    CorruptArchiveError,
    FORMAT_VERSION,
    IncompatibleArchiveError,
    PycdsError,
    UnsupportedInterpreterError,
    UnsupportedObjectError,
    __version__,
    check_interpreter,
    inspect,
    save,
    verify,
)
from ._archive import Archive, load
from ._hook import auto, dump, share, stats, trace

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
