"""What the engine keeps of a compiled policy between runs, and how.

Writing a policy's Python source and compiling it is nearly all the time a
policy set takes to load (parsing and checking take a millisecond or two).
A *code cache* keeps the result: the marshalled code object, the way
CPython keeps ``.pyc`` files, under a key that hashes everything the code
depends on (the engine's fingerprint, the policy's name and text, and the
set-dependent free names of ``CompiledPolicy.program``).  The hash is the
one of hash-based ``.pyc`` files (PEP 552): ``importlib.util.source_hash``,
64 bits of SipHash, which is what CPython trusts to tell sources apart.
(Not hashlib: loading it sets up OpenSSL, which cost momd 0.7 MB of
resident memory for good, for a few keys made at start.)

The engine does no I/O: it is given an object with the ``CodeCache``
methods (``momservice.policy_cache.PolicyCodeCache`` keeps entries in a
directory).  Whatever such a cache returns is checked here before it is
used; anything unexpected is a miss, reported back through ``discard``,
and the policy is compiled as if there were no cache.
"""

from __future__ import annotations

import importlib.util
import marshal
import types
from typing import Any, Protocol

#: Bumped when the layout of an entry changes (2: keys of source_hash).
FORMAT = 2


class CodeCache(Protocol):
    """Storage of compiled policy code, by key (see this module's doc)."""

    #: Identifies the engine (its source) and the Python that compiled
    #: the code: part of every key.
    fingerprint: str

    def load(self, key: str) -> bytes | None:
        """The bytes stored under ``key``, or None."""

    def store(self, key: str, data: bytes) -> None:
        """Keep ``data`` under ``key``; failing quietly is allowed."""

    def discard(self, key: str, reason: str) -> None:
        """The entry under ``key`` was unusable (``reason``): forget it."""


_default: CodeCache | None = None


def use_code_cache(cache: CodeCache | None) -> None:
    """Set the cache of every PolicySet made without a ``code_cache``
    argument (None: no cache, the default)."""
    global _default
    _default = cache


def default_code_cache() -> CodeCache | None:
    return _default


def cache_key(cache: CodeCache, kind: str, policy: str | None, text: str,
              names: frozenset[str] = frozenset(), others: frozenset[str] = frozenset()) -> str:
    """The key of one entry: a hash of what the entry's content depends on
    (for a program: the set's free names and what its other policies bind
    that matters to it)."""
    hashed = bytearray()
    for part in (str(FORMAT), cache.fingerprint, kind, repr(policy), text,
                 str(len(names)), *sorted(names), *sorted(others)):
        data = part.encode("utf-8", "surrogatepass")
        # Length-prefixed, so that no two different lists hash alike.
        hashed += len(data).to_bytes(8, "little")
        hashed += data
    return importlib.util.source_hash(bytes(hashed)).hex()


def dump_analysis(key: str, free: frozenset[str], local_names: frozenset[str]) -> bytes:
    return marshal.dumps((FORMAT, key, "analysis", tuple(sorted(free)),
                          tuple(sorted(local_names))))


def load_analysis(key: str, data: bytes) -> tuple[frozenset[str], frozenset[str]]:
    """The free and local names of an entry; ValueError when it is not one."""
    entry = _entry(key, data, "analysis", 5)
    free, local_names = entry[3], entry[4]
    if not (_strings(free) and _strings(local_names)):
        raise ValueError("names that are not strings")
    return frozenset(free), frozenset(local_names)


def dump_program(key: str, code: types.CodeType, names: list[str], runs: dict[str, str],
                 consts: dict[str, Any]) -> bytes:
    """An entry for a compiled program; ValueError when a constant cannot be
    marshalled (the program is then simply not kept)."""
    return marshal.dumps((FORMAT, key, "program", code, tuple(names),
                          tuple(sorted(runs.items())), tuple(sorted(consts.items()))))


def load_program(key: str, data: bytes) -> tuple[types.CodeType, list[str], dict[str, str],
                                                  dict[str, Any]]:
    """Code, top-level function names, def runs and constants of an entry;
    ValueError when it is not one."""
    entry = _entry(key, data, "program", 7)
    code, names, runs, consts = entry[3:]
    if type(code) is not types.CodeType or not _strings(names):
        raise ValueError("no code object or bad names")
    if type(runs) is not tuple or type(consts) is not tuple or \
            not all(type(p) is tuple and len(p) == 2 for p in runs + consts):
        raise ValueError("bad runs or constants")
    if not all(_strings(p) for p in runs) or not _strings(tuple(k for k, _ in consts)):
        raise ValueError("bad runs or constants")
    return code, list(names), dict(runs), dict(consts)


def _entry(key: str, data: bytes, kind: str, length: int) -> tuple:
    try:
        entry = marshal.loads(data)
    except (EOFError, ValueError, TypeError) as e:
        raise ValueError(f"not marshal data: {e}") from None
    if type(entry) is not tuple or len(entry) != length or entry[0] != FORMAT or \
            entry[1] != key or entry[2] != kind:
        raise ValueError(f"not a {kind} entry of this key and format")
    return entry


def _strings(items: Any) -> bool:
    return type(items) is tuple and all(type(s) is str for s in items)
