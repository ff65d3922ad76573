"""Compiled policy code kept in a directory between runs (the engine does no I/O).

``PolicyCodeCache`` is the ``CodeCache`` of ``momservice.policy.codecache``
that momd gives the policy engine: a restart then links the policies'
code instead of writing and compiling it again (a few milliseconds instead
of tens).  One file per entry, ``KEY.code``: a magic line, the hash of
the payload (``importlib.util.source_hash``, as the keys, see
``codecache``) and the payload.  Anything wrong with a file (truncated,
corrupt, foreign, unreadable) or with the directory (missing, not
writable, writable by others) makes that entry a miss, logged at debug:
never an error, and never a change in what the policies do.

The directory holds at most ``max_entries`` files and ``max_bytes``
bytes: a store that goes beyond either removes the least recently used
entries (a hit refreshes an entry's modification time).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import stat
import sys
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

SUFFIX = ".code"
MAGIC = b"mom policy code 2\n"
_DIGEST = len(importlib.util.source_hash(b""))


def engine_fingerprint() -> str:
    """A hash of the policy engine's source and of the Python running it:
    code compiled by another engine or another Python never matches."""
    import momservice.policy as engine

    sources = sorted(Path(engine.__file__).parent.glob("*.py"))
    if not sources:  # installed without its source: no telling versions apart
        raise FileNotFoundError(f"no source of the policy engine in {engine.__file__}")
    # File by file (not all the source at once, which would leave momd's
    # heap that much bigger).
    hashed = bytearray(sys.version.encode() + importlib.util.MAGIC_NUMBER)
    for path in sources:
        name = path.name.encode()
        hashed += len(name).to_bytes(8, "little") + name
        hashed += importlib.util.source_hash(path.read_bytes())
    return importlib.util.source_hash(bytes(hashed)).hex()


class PolicyCodeCache:
    """A directory of compiled policy code (see the module's doc)."""

    def __init__(self, directory: str | Path, *, max_entries: int = 256,
                 max_bytes: int = 32 * 1024 * 1024, fingerprint: str | None = None) -> None:
        self.directory = Path(directory)
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._usable: bool | None = None
        if fingerprint is None:
            try:
                fingerprint = engine_fingerprint()
            except OSError as e:
                log.debug("policy code cache not used: %s", e)
                fingerprint, self._usable = "", False
        self.fingerprint = fingerprint
        #: Entries and bytes in the directory as far as this object knows
        #: (None: not counted yet); an exact count is made before evicting.
        self._count: int | None = None
        self._bytes = 0

    def __repr__(self) -> str:
        return f"PolicyCodeCache({str(self.directory)!r})"

    def _path(self, key: str) -> Path:
        if not key.isalnum():
            raise ValueError(f"bad cache key {key!r}")
        return self.directory / (key + SUFFIX)

    def usable(self) -> bool:
        """Whether the directory exists (made if it can be), is ours and is
        writable by no one else: code loaded from it is run."""
        if self._usable is None:
            self._usable = self._check_directory()
        return self._usable

    def _check_directory(self) -> bool:
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            info = self.directory.stat()
        except OSError as e:
            log.debug("policy code cache %s not usable: %s", self.directory, e)
            return False
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or \
                info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            log.debug("policy code cache %s not used: not a directory of this user "
                      "writable only by it", self.directory)
            return False
        return True

    def load(self, key: str) -> bytes | None:
        """The payload stored under ``key``, or None (a miss)."""
        if not self.usable():
            return None
        path = self._path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            log.debug("policy code cache: cannot read %s: %s", path, e)
            return None
        head = len(MAGIC)
        payload = data[head + _DIGEST:]
        if not data.startswith(MAGIC) or len(data) < head + _DIGEST or \
                importlib.util.source_hash(payload) != data[head:head + _DIGEST]:
            self.discard(key, "corrupt or truncated")
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # recently used: evicted last
        return payload

    def store(self, key: str, data: bytes) -> None:
        """Keep ``data`` under ``key``; a failure is logged at debug, nothing more."""
        if not self.usable():
            return
        path = self._path(key)
        try:
            fd, temp = tempfile.mkstemp(dir=self.directory, prefix=".new-", suffix=SUFFIX)
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(MAGIC + importlib.util.source_hash(data) + data)
                os.replace(temp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temp)
                raise
        except OSError as e:
            log.debug("policy code cache: cannot write %s: %s", path, e)
            return
        if self._count is None:
            entries = self._entries()
            self._count, self._bytes = len(entries), sum(size for _, _, size in entries)
        else:
            self._count += 1
            self._bytes += len(data)
        if self._count > self.max_entries or self._bytes > self.max_bytes:
            self._evict()

    def discard(self, key: str, reason: str) -> None:
        """Remove an unusable entry."""
        path = self._path(key)
        log.debug("policy code cache: %s is unusable (%s), compiling instead", path, reason)
        with contextlib.suppress(OSError):
            path.unlink()

    def _entries(self) -> list[tuple[str, int, int]]:
        """(path, modification time in ns, size) of every entry."""
        entries = []
        try:
            with os.scandir(self.directory) as scan:
                for entry in scan:
                    if entry.name.endswith(SUFFIX) and not entry.name.startswith("."):
                        try:
                            info = entry.stat()
                        except OSError:
                            continue
                        entries.append((entry.path, info.st_mtime_ns, info.st_size))
        except OSError as e:
            log.debug("policy code cache: cannot list %s: %s", self.directory, e)
        return entries

    def _evict(self) -> None:
        """Remove the least recently used entries down to 3/4 of the bounds
        (so that the next stores need not list the directory again)."""
        entries = sorted(self._entries(), key=lambda e: e[1])
        count, total = len(entries), sum(size for _, _, size in entries)
        keep_entries, keep_bytes = self.max_entries * 3 // 4, self.max_bytes * 3 // 4
        for path, _, size in entries:
            if count <= keep_entries and total <= keep_bytes:
                break
            with contextlib.suppress(OSError):
                os.unlink(path)
            count -= 1
            total -= size
        self._count, self._bytes = count, total
