"""The local spool: records the store could not take yet, as JSON lines, replayed later.

Each process appends to a spool file it holds an exclusive lock on (`spool_path`, or
`spool_path.<pid>` when another live process holds that one). A spool file nobody holds
belongs to a process that is gone; whoever can lock it replays it into the store.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
from collections.abc import Callable, Iterator, Sequence
from typing import IO

import msgspec

from .record import LogRecord

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(LogRecord)


def _lock(path: str) -> IO[bytes] | None:
    """Open and exclusively lock `path` (created if missing), or None if someone holds it."""
    while True:
        # 0600: the spool holds prompts and answers.
        f = os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600), "ab+")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            return None
        # The previous holder may have replayed and unlinked it between open and lock.
        try:
            if os.stat(path).st_ino == os.fstat(f.fileno()).st_ino:
                return f
        except FileNotFoundError:
            pass
        f.close()


def _read(f: IO[bytes], batch: int) -> Iterator[list[LogRecord]]:
    f.seek(0)
    chunk: list[LogRecord] = []
    for line in f:
        if not line.strip():
            continue
        try:
            chunk.append(_decoder.decode(line))
        except msgspec.DecodeError:
            continue  # a torn last line from a crash mid-write
        if len(chunk) >= batch:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class Spool:
    """This process's spool file, plus the replay of orphaned ones."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._file: IO[bytes] | None = None
        self._own_path: str | None = None
        self.pending = 0

    def _open(self) -> IO[bytes]:
        if self._file is None:
            directory = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(directory, exist_ok=True)
            for candidate in (self.path, f"{self.path}.{os.getpid()}"):
                f = _lock(candidate)
                if f is not None:
                    self._file, self._own_path = f, candidate
                    break
            else:
                raise OSError(f"cannot lock a spool file at {self.path}")
            self.pending = sum(1 for line in self._file_lines() if line.strip())
        assert self._file is not None
        return self._file

    def _file_lines(self) -> Iterator[bytes]:
        assert self._file is not None
        self._file.seek(0)
        yield from self._file

    def append(self, records: Sequence[LogRecord]) -> None:
        f = self._open()
        f.seek(0, os.SEEK_END)
        f.write(b"".join(_encoder.encode(r) + b"\n" for r in records))
        f.flush()
        os.fsync(f.fileno())
        self.pending += len(records)

    def replay(self, write: Callable[[list[LogRecord]], None], batch: int) -> int:
        """Write every spooled record (ours and orphans'); raises what `write` raises.

        A file is emptied only once all of it is written; ids make a repeated replay harmless.
        """
        done = 0
        if self._file is not None and self.pending:
            for chunk in _read(self._file, batch):
                write(chunk)
                done += len(chunk)
            self._file.truncate(0)
            self._file.flush()
            self.pending = 0
        for path in self._paths():
            if path == self._own_path:
                continue
            f = _lock(path)
            if f is None:
                continue
            try:
                for chunk in _read(f, batch):
                    write(chunk)
                    done += len(chunk)
                os.unlink(path)
            finally:
                f.close()
        return done

    def has_orphans(self) -> bool:
        for path in self._paths():
            try:
                if path != self._own_path and os.path.getsize(path) > 0:
                    return True
            except FileNotFoundError:
                continue
        return False

    def _paths(self) -> list[str]:
        base = glob.escape(self.path)
        return sorted(glob.glob(base) + glob.glob(base + ".*"))

    def close(self) -> None:
        if self._file is not None:
            f, self._file = self._file, None
            empty = self.pending == 0
            if empty and self._own_path is not None:
                # Nothing waiting: remove the file so a clean shutdown leaves no spool behind.
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._own_path)
            f.close()
