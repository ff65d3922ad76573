"""The policies momd runs: where they come from, the active set, and every change.

Sources are layered: the configured policy files and directories (a later
one overrides an earlier one by name), then the policies set over the bus,
kept in the store (:mod:`momservice.policy_store`), which override them by
name.  Every change that makes a new set (set, delete, reload, reset) is
first tried once on the current statistics, through the engine's
``try_out``, and refused with ``PolicyTrialError`` if that fails: the
active set stays.  Policy files that fail at start-up give way to the
shipped defaults.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from .errors import Failed, InvalidArgument, NotFound
from .heap import release_free_memory
from .journal_fields import policy_error_fields, policy_fields
from .policy import CodeCache, PolicyError, PolicySet, PolicyTrialError, compile_policy
from .policy_files import find_policy_files, read_policy_texts
from .policy_store import PolicyStore, check_name

log = logging.getLogger(__name__)

#: Tries a candidate set on the current statistics; PolicyTrialError if it fails.
TryOut = Callable[[PolicySet], None]
#: The layered sources as they are now (a directory may appear later).
Sources = Callable[[], Sequence[Path]]


def load_policy_texts(sources: Sequence[Path], store: PolicyStore | None = None
                      ) -> dict[str, str]:
    """Every policy of the layered sources, then of ``store``, that reads and compiles.

    The store's policies override the sources' by name, as a later source
    overrides an earlier one: the override is chosen before reading, so a
    broken override leaves the name out rather than falling back.  A
    policy that cannot be read or does not compile is skipped with an
    error naming its file: the others still manage the host.
    """
    try:
        files = find_policy_files(sources)
    except OSError as e:
        log.error("cannot list policies: %s", e)
        files = {}
    if store is not None:
        try:
            stored = store.files()
        except OSError as e:
            log.error("cannot list the stored policies in %s: %s", store.directory, e)
            stored = {}
        for name, path in stored.items():
            if name in files:
                log.info("policy %s: %s (set over the bus) overrides %s",
                         name, path, files[name])
        files.update(stored)
    return _load_files(files)


def _load_files(files: Mapping[str, Path]) -> dict[str, str]:
    texts: dict[str, str] = {}
    for name, path in files.items():
        try:
            text = read_policy_texts({name: path})[name]
            compile_policy(text, name)
        except (OSError, UnicodeDecodeError) as e:
            log.error("policy %s skipped: cannot read %s: %s", name, path, e,
                      extra=policy_fields(name))
            continue
        except PolicyError as e:
            where = f"{path}:{e.line}" if e.line is not None else str(path)
            log.error("policy %s skipped: %s: %s", name, where, e.message,
                      extra=policy_fields(name, e.line))
            continue
        texts[name] = text
    return texts


class PolicyLibrary:
    """The policy sources, the store and the active set, with the changes to it.

    ``sources`` is asked at every read (``Config.policy_sources``: the
    optional /etc directory counts once it exists); ``defaults`` are the
    shipped policies.  ``active`` is the one PolicySet the engine
    evaluates: changes replace its content (``PolicySet.take``), never the
    object.  ``try_out`` is the engine's trial, bound once the engine
    exists; until then nothing can be tried and every change is taken as
    it is.
    """

    def __init__(self, sources: Sources, store: PolicyStore,
                 defaults: Sequence[Path] = (), code_cache: CodeCache | None = None) -> None:
        self.sources = sources
        self.store = store
        self.defaults = list(defaults)
        #: Where every set made here keeps its compiled code (None: nowhere).
        self.code_cache = code_cache
        self.active = PolicySet(load_policy_texts(self.sources(), self.store),
                                code_cache=code_cache)
        self.try_out: TryOut = lambda candidate: None
        #: Why the policies on disk are not the active ones (they failed
        #: when evaluated at start-up or on a reload); empty when they are.
        self.load_error = ""
        if not len(self.active):
            log.warning("no policy loaded: guests are watched but nothing is decided")
        release_free_memory()

    # -- reading -------------------------------------------------------------

    def text(self, name: str) -> str:
        """The text of one active policy; NotFound if none."""
        try:
            return self.active.text(name)
        except (KeyError, TypeError):
            raise NotFound(f"no policy {name!r}") from None

    def locate(self, name: str) -> str | None:
        """The file the active policy ``name`` is read from now: the store's
        copy if it was set over the bus, else the policy file of that name in
        the sources (or the shipped defaults, which stand in when the
        configured policies failed at start-up); None if none holds it."""
        if name in self.store.names():
            return str(self.store.path(name))
        for sources in (self.sources(), self.defaults):
            path = find_policy_files(sources).get(name)
            if path is not None and self._same_text(name, path):
                return str(path)
        return None

    def _same_text(self, name: str, path: Path) -> bool:
        try:
            return read_policy_texts({name: path})[name] == self.active.text(name)
        except (OSError, UnicodeDecodeError, KeyError):
            return False

    # -- start-up ------------------------------------------------------------

    def check_startup(self) -> None:
        """Try the loaded set once; if it fails on this host's statistics, the
        shipped defaults manage it rather than nothing at all."""
        try:
            self.try_out(self.active)
        except PolicyTrialError as e:
            defaults = PolicySet(load_policy_texts(self.defaults), code_cache=self.code_cache)
            self.load_error = (f"the configured policies were not started: {e}; "
                               f"the shipped default policies run instead")
            log.error("%s (%s)", self.load_error, ", ".join(defaults.names) or "none",
                      extra=policy_error_fields(e))
            self.active.take(defaults)
            release_free_memory()

    # -- changes -------------------------------------------------------------

    def set(self, name: str, text: str) -> None:
        """Add or replace a policy, durably.

        Checked first (InvalidArgument for a bad name, PolicyError with the
        line for a bad text, PolicyTrialError when the set with it fails on
        the current statistics: nothing changes), then written atomically
        to the store (Failed: nothing changes), then made active.
        """
        check_name(name)
        if not isinstance(text, str):
            raise InvalidArgument(f"a policy text must be a string, got {type(text).__name__}")
        candidate = self.active.copy()
        candidate.set_policy(name, text)
        self.try_out(candidate)
        try:
            self.store.save(name, text)
        except OSError as e:
            raise Failed(str(e)) from e
        self.active.take(candidate)
        release_free_memory()
        log.info("policy %s set: active policies %s", name, ", ".join(self.active.names))

    def delete(self, name: str) -> None:
        """Delete a policy set over the bus.

        A policy file of the same name becomes active again.  A policy
        that only comes from a policy file or directory is not deleted
        (InvalidArgument): an empty policy of its name overrides it.
        NotFound when there is no such policy; PolicyTrialError when the
        set without it fails (nothing deleted); Failed when the disk refuses.
        """
        try:
            stored = isinstance(name, str) and name in self.store.names()  # valid names only
        except OSError as e:
            raise Failed(str(e)) from e
        if stored:
            candidate = self._without_stored(name)
            self.try_out(candidate)
            try:
                self.store.delete(name)
            except OSError as e:
                raise Failed(str(e)) from e
            self.active.take(candidate)
            release_free_memory()
            log.info("policy %s deleted: active policies %s", name,
                     ", ".join(self.active.names) or "none")
            return
        if isinstance(name, str) and name in self.active:
            raise InvalidArgument(
                f"policy {name!r} comes from a policy file, not from the bus, and cannot "
                f"be deleted over the bus: remove the file and reload, or use "
                f"SetPolicy({name!r}, \"\") to override it durably with an empty policy")
        raise NotFound(f"no policy {name!r}")

    def reload(self) -> None:
        """Re-read the policy files and directories and the stored policies;
        bad ones are skipped (logged), the rest replace the active set.

        PolicyTrialError when that set fails on the current statistics:
        the active set stays, and ``load_error`` says why.
        """
        texts = load_policy_texts(self.sources(), self.store)
        self._activate_from_disk(self._tried_from_disk(texts, "reloaded"), "reloaded")

    def reset(self) -> list[str]:
        """Delete every policy set over the bus and reload; returns the names removed.

        PolicyTrialError, with nothing deleted, when the policy files alone
        fail on the current statistics; Failed when the disk refuses a
        deletion (what the store still holds is reloaded).
        """
        files_only = self._tried_from_disk(load_policy_texts(self.sources()), "reset")
        try:
            removed = self.store.delete_all()
        except OSError as e:
            self.reload()  # what the store still holds, with the files
            raise Failed(str(e)) from e
        self._activate_from_disk(files_only, "reset")
        return removed

    def _tried_from_disk(self, texts: dict[str, str], what: str) -> PolicySet:
        """The policies read from disk as a set, tried on the current statistics;
        PolicyTrialError (logged, kept in ``load_error``) when they fail."""
        try:
            candidate = PolicySet(texts, code_cache=self.code_cache)
            self.try_out(candidate)
        except PolicyError as e:  # load_policy_texts compiled each one already
            self.load_error = f"policies not {what}: {e}; the active policies stay"
            log.error("%s", self.load_error, extra=policy_error_fields(e))
            raise
        return candidate

    def _activate_from_disk(self, candidate: PolicySet, what: str) -> None:
        self.active.take(candidate)
        release_free_memory()
        self.load_error = ""
        log.info("policies %s: %s", what, ", ".join(self.active.names) or "none")

    def _without_stored(self, name: str) -> PolicySet:
        """The active set once the stored policy ``name`` is gone: with its file, if any."""
        try:
            files = find_policy_files(self.sources())
        except OSError as e:
            log.error("cannot list policies: %s", e)
            files = {}
        texts = _load_files({name: files[name]}) if name in files else {}
        candidate = self.active.copy()
        if name in texts:
            candidate.set_policy(name, texts[name])
        elif name in candidate:
            candidate.delete_policy(name)
        return candidate
