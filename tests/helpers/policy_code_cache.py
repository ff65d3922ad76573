"""A policy code cache that counts its hits, misses and stores, for tests."""

from __future__ import annotations

from pathlib import Path

from momservice.policy_cache import PolicyCodeCache

#: Set to a directory, every PolicySet of tests/policy goes through a
#: CountingCache there (see tests/policy/conftest.py).
CACHE_ENV = "MOM_TEST_POLICY_CODE_CACHE"


class CountingCache(PolicyCodeCache):
    """A PolicyCodeCache that counts what it is asked."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory, max_entries=100_000, max_bytes=1 << 40)
        self.counts = {"hits": 0, "misses": 0, "stores": 0, "discards": 0}

    def load(self, key: str) -> bytes | None:
        data = super().load(key)
        self.counts["hits" if data is not None else "misses"] += 1
        return data

    def store(self, key: str, data: bytes) -> None:
        self.counts["stores"] += 1
        super().store(key, data)

    def discard(self, key: str, reason: str) -> None:
        self.counts["discards"] += 1
        super().discard(key, reason)
