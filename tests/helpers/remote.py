"""An in-memory object store under its own scheme (``busgentest://``) that records what was written and moved.

Registered with fsspec on import, once for the whole session, so every test module that writes to
``busgentest://`` sees the same recording class.
"""

from fsspec import register_implementation
from fsspec.implementations.memory import MemoryFileSystem


class RecordingStore(MemoryFileSystem):
    """In-memory object store that logs the names it writes and the moves it makes."""

    protocol = "busgentest"
    store: dict = {}  # its own keys, apart from fsspec's shared memory:// store
    pseudo_dirs = [""]
    writes: list[str] = []
    moves: list[tuple[str, str]] = []

    @classmethod
    def _strip_protocol(cls, path):
        return MemoryFileSystem._strip_protocol(path.removeprefix("busgentest://"))

    def _open(self, path, mode="rb", **kwargs):
        if "w" in mode:
            self.writes.append(self._strip_protocol(path).lstrip("/"))
        return super()._open(path, mode, **kwargs)

    def mv(self, path1, path2, **kwargs):
        self.moves.append((self._strip_protocol(path1).lstrip("/"), self._strip_protocol(path2).lstrip("/")))
        return super().mv(path1, path2, **kwargs)


register_implementation("busgentest", RecordingStore, clobber=True)
