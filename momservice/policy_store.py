"""The policies set over the bus, kept on disk so that they survive a restart.

``SetPolicy`` writes ``<state-dir>/policy.d/<name>.policy``; at start and on
every reload these files override the policy files and directories of the
configuration by name, and ``DeletePolicy`` / ``ResetPolicies`` remove them.
Writes are atomic: a temporary file in the same directory, flushed and
fsynced, renamed over the old one, then the directory is fsynced, so a crash
or a power cut leaves either the old text or the new one, never a mix.

The store only keeps texts; whether a text compiles is the caller's concern.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from .errors import InvalidArgument
from .journal_fields import policy_fields
from .policy_files import SUFFIX, is_policy_file, policy_name

log = logging.getLogger(__name__)

#: Longest policy name the store accepts.
MAX_NAME_LENGTH = 64
_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,%d}" % MAX_NAME_LENGTH)

#: Temporary files are hidden (so no loader takes them for policies) and
#: recognisable (so a leftover from a crash can be cleaned up).
_TEMP_SUFFIX = ".tmp"

DIR_MODE = 0o755   # policies are no secret: GetPolicies shows them to every local user
FILE_MODE = 0o644


def check_name(name: object) -> str:
    """``name`` if it can name a stored policy, else InvalidArgument saying why.

    1 to 64 characters among letters, digits, ``_``, ``.`` and ``-``, not
    starting with ``.``: no path separator, no control character, nothing
    hidden.
    """
    if not isinstance(name, str):
        raise InvalidArgument(f"a policy name must be a string, got {type(name).__name__}")
    if not _NAME_RE.fullmatch(name):
        raise InvalidArgument(
            f"invalid policy name {name!r}: use 1 to {MAX_NAME_LENGTH} characters "
            f"among letters, digits, '_', '.' and '-'")
    if name.startswith("."):
        raise InvalidArgument(f"invalid policy name {name!r}: it must not start with '.'")
    return name


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class PolicyStore:
    """The policies administrators set over the bus, one file each in
    ``<state_dir>/policy.d``, written atomically and durably.

    Nothing is created until the first ``save``; a missing directory is an
    empty store.
    """

    def __init__(self, state_dir: Path) -> None:
        self.directory = Path(state_dir) / "policy.d"

    def path(self, name: str) -> Path:
        """The file of the policy ``name`` (InvalidArgument for an invalid name)."""
        return self.directory / f"{check_name(name)}{SUFFIX}"

    # -- reading -------------------------------------------------------------

    def files(self) -> dict[str, Path]:
        """Name to file of every stored policy, by name.

        The same rules as policy directories: hidden files and other
        suffixes are ignored.  A file whose name no policy may have (put
        there by hand) is ignored with a warning.  OSError if the directory
        exists but cannot be listed.
        """
        try:
            entries = sorted(self.directory.iterdir())
        except FileNotFoundError:
            return {}
        found: dict[str, Path] = {}
        for path in entries:
            if not (is_policy_file(path) and path.is_file()):
                continue
            name = policy_name(path)
            try:
                check_name(name)
            except ValueError as e:
                log.warning("ignoring %s: %s", path, e)
                continue
            found[name] = path
        return found

    def names(self) -> set[str]:
        """Names of the stored policies (OSError if the directory cannot be listed)."""
        return set(self.files())

    def load(self) -> dict[str, str]:
        """Name to text of every stored policy that can be read as UTF-8.

        A file that cannot be read, or is not UTF-8, is skipped with an
        error naming it; the others load.  An unlistable directory is
        logged and loads nothing.
        """
        try:
            files = self.files()
        except OSError as e:
            log.error("cannot list the stored policies in %s: %s", self.directory, e)
            return {}
        texts: dict[str, str] = {}
        for name, path in files.items():
            try:
                texts[name] = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as e:
                log.error("stored policy %s skipped: cannot read %s: %s", name, path, e,
                          extra=policy_fields(name))
        return texts

    # -- writing -------------------------------------------------------------

    def save(self, name: str, text: str) -> Path:
        """Store ``text`` as the policy ``name``, atomically and durably.

        InvalidArgument for an invalid name or a text that is not a string (or
        cannot be encoded as UTF-8); OSError when the disk refuses, in
        which case the previous text, if any, is still in place.
        """
        target = self.path(name)
        if not isinstance(text, str):
            raise InvalidArgument(f"a policy text must be a string, got {type(text).__name__}")
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise InvalidArgument(f"policy {name}: the text cannot be encoded as UTF-8: "
                                  f"{e.reason}") from None
        self._make_directory()
        import tempfile  # here: momd loads it only once it writes a policy
        fd, temp = tempfile.mkstemp(dir=self.directory, prefix=f".{name}{SUFFIX}.",
                                    suffix=_TEMP_SUFFIX)
        try:
            try:
                os.fchmod(fd, FILE_MODE)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temp, target)
        except BaseException:
            try:
                os.unlink(temp)
            except OSError:
                pass
            raise
        _fsync_dir(self.directory)
        log.info("policy %s stored in %s", name, target)
        return target

    def delete(self, name: str) -> bool:
        """Remove the stored policy ``name``; False when there was none."""
        target = self.path(name)
        try:
            target.unlink()
        except FileNotFoundError:
            return False
        _fsync_dir(self.directory)
        log.info("stored policy %s deleted (%s)", name, target)
        return True

    def delete_all(self) -> list[str]:
        """Remove every stored policy, and temporary files a crash left behind;
        returns the names removed, sorted.  OSError stops at the first file
        the disk refuses to remove (the ones before it are gone)."""
        removed: list[str] = []
        try:
            entries = sorted(self.directory.iterdir())
        except FileNotFoundError:
            return removed
        try:
            for path in entries:
                if (path.name.startswith(".") and path.name.endswith(_TEMP_SUFFIX)
                        and SUFFIX in path.name and path.is_file()):
                    path.unlink(missing_ok=True)
            for name, path in self.files().items():
                path.unlink(missing_ok=True)
                removed.append(name)
        finally:
            if entries:
                _fsync_dir(self.directory)
        if removed:
            log.info("stored policies deleted: %s", ", ".join(removed))
        return removed

    def _make_directory(self) -> None:
        if self.directory.is_dir():
            return
        parent = self.directory.parent
        parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        self.directory.mkdir(mode=DIR_MODE, exist_ok=True)
        _fsync_dir(parent)
