"""One generation run per output folder: a lock file naming its holder.

Two runs on the same ``--out`` would delete each other's temporary shard files and
race on the manifest. The lock is a file created with ``O_EXCL`` holding the holder's
pid, host and start time. A second run is refused with the holder's name; a lock
whose pid is no longer alive on this host (a killed run) is taken over with a warning.
A lock from another host cannot be checked from here: the message says how to clear it.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
import warnings
from pathlib import Path

from busgen.generate.config import GenerateError, GenerateWarning

LOCK_FILE = ".busgen-generate.lock"
UNWRITTEN_GRACE_S = 10.0  # a lock file still empty after this long belongs to a run that died creating it


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host (signal 0 checks without signalling)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    return True


class OutputLock:
    """Context manager holding ``out/.busgen-generate.lock`` for the duration of a run."""

    def __init__(self, out: str | Path):
        self.path = Path(out) / LOCK_FILE
        self.me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "token": uuid.uuid4().hex,
        }

    def __enter__(self) -> "OutputLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock, or take over a dead holder's; raises ``GenerateError`` naming a live holder."""
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._clear_if_stale()
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(json.dumps(self.me))
                fh.flush()
                os.fsync(fh.fileno())
            return
        raise GenerateError(f"could not take the lock {self.path}: other runs keep taking it; choose another --out")

    def _clear_if_stale(self) -> None:
        """Remove the existing lock if its holder is dead; raise if it is (or may be) alive."""
        try:
            text = self.path.read_text()
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return  # released meanwhile: try again
        try:
            holder = json.loads(text)
            pid, host = int(holder["pid"]), str(holder["host"])
        except (ValueError, KeyError, TypeError):
            if age < UNWRITTEN_GRACE_S:
                raise GenerateError(
                    f"{self.path.parent} is being claimed by another generation run (lock {self.path} is being "
                    "written): wait for it to finish or choose another --out"
                ) from None
            holder, pid, host = {}, None, None
        if pid is not None and (host != self.me["host"] or pid_alive(pid)):
            where = "this host" if host == self.me["host"] else f"host {host}"
            raise GenerateError(
                f"{self.path.parent} is in use by another generation run (pid {pid} on {where}, started "
                f"{holder.get('started_at', '?')}; lock file {self.path}): wait for it to finish or choose another "
                f"--out; if that run is gone, delete {self.path}"
            )
        warnings.warn(
            f"taking over the lock {self.path} of a generation run that is no longer running "
            f"(pid {pid} on this host); its partial shards are discarded",
            GenerateWarning,
            stacklevel=4,
        )
        try:
            if self.path.read_text() == text:  # still the dead holder's: not one a concurrent run just took
                self.path.unlink()
        except FileNotFoundError:
            pass

    def release(self) -> None:
        """Remove the lock if it is still ours."""
        try:
            if json.loads(self.path.read_text()).get("token") == self.me["token"]:
                self.path.unlink()
        except (FileNotFoundError, ValueError):
            pass
