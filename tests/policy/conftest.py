"""With $MOM_TEST_POLICY_CODE_CACHE set to a directory, every PolicySet of
these tests goes through a policy code cache kept there.

``test_code_cache.py`` runs the conformance tests twice so: the first run
fills the cache, the second loads every policy's code from it, and both
must pass.  How often the cache hit, missed and stored is written to
``stats.json`` in the directory at the end of the session.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator

import pytest

from momservice.policy import forget_compiled_policies, use_code_cache
from tests.helpers.policy_code_cache import CACHE_ENV, CountingCache


_counting: CountingCache | None = None


@pytest.fixture(autouse=True)
def _policy_code_cache_from_environment() -> Iterator[None]:
    global _counting
    directory = os.environ.get(CACHE_ENV)
    if not directory:
        yield
        return
    if _counting is None:
        _counting = CountingCache(Path(directory))
    # Each test starts as a restarted momd would: only the disk cache is warm.
    forget_compiled_policies()
    use_code_cache(_counting)
    try:
        yield
    finally:
        use_code_cache(None)


def pytest_sessionfinish(session: pytest.Session) -> None:
    if _counting is not None:
        (_counting.directory / "stats.json").write_text(json.dumps(_counting.counts))
