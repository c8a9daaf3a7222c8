"""pycds: faster CPython start-up by importing code objects in place from an archive.

See the README for the TRACE / DUMP / SHARE workflow and ``python -m pycds --help``.

The names below are imported on first use (PEP 562): the start-up hook imports this
package for every interpreter that runs with ``PYCDSMODE`` set and must stay cheap.
"""

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

_FROM = {
    "Archive": "_archive",
    "load": "_archive",
    "auto": "_hook",
    "dump": "_hook",
    "share": "_hook",
    "stats": "_hook",
    "trace": "_hook",
}


def __getattr__(name):
    if name not in __all__:
        raise AttributeError("module 'pycds' has no attribute %r" % (name,))
    # __import__, not importlib.import_module: touching pycds must not import anything
    # else into the program (its own imports may be recorded or served).
    module = __import__("pycds." + _FROM.get(name, "_pycds"), fromlist=[name])
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
