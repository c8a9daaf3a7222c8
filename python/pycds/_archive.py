"""``pycds.Archive``: the read-only mapping returned by ``pycds.load``."""

from _collections_abc import Mapping

from . import _pycds


class Archive(Mapping):
    """An archive opened for use in place: a read-only mapping from root names to
    objects. A root's objects are checked and loaded on first access and live as long as
    the process. All ``Mapping`` methods work (``keys``, ``items``, ``values``, ``get``,
    ``==``); a key that is not a ``str`` is simply absent."""

    __slots__ = ("_native",)

    def __init__(self, path, check=True):
        self._native = _pycds.Archive(path, check)

    def __getitem__(self, name):
        if not isinstance(name, str):
            raise KeyError(name)
        return self._native[name]

    def __contains__(self, name):
        return isinstance(name, str) and name in self._native

    def __iter__(self):
        return iter(self._native.keys())

    def __len__(self):
        return len(self._native)

    def meta(self, name):
        """The metadata bytes stored with root ``name``, or ``None`` if there is none."""
        return self._native.meta(name)

    @property
    def path(self):
        """The archive's path."""
        return self._native.path

    def stats(self):
        """Load statistics: spans and objects made ready, strings interned, seconds."""
        return self._native.stats()

    def __repr__(self):
        return "<pycds.Archive %r (%d roots)>" % (str(self.path), len(self))


def load(path, check=True):
    """Open the archive at ``path`` for use in place; returns an :class:`Archive`.

    With ``check`` (the default) every object of a root is checked before the root is
    handed out, so an archive of unknown origin cannot hand out malformed objects.
    ``check=False`` trusts the objects (checked when pycds wrote the archive) and verifies
    only each root's checksum and slots: for archives this user wrote, as the import
    hook does (see ``spec/security.md``)."""
    return Archive(path, check)
