"""release_free_memory gives the C heap's freed pages back (what compiling a policy set leaves)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from momservice import heap
from momservice.heap import ReleaseAfterEvaluations, release_free_memory
from tests.helpers.service_setup import Setup

REPO = Path(__file__).resolve().parent.parent

# In a process of its own: the test process's heap is whatever earlier tests
# left.  Compiling the shipped policies builds (and frees) the syntax tree of
# their generated source on the C heap: about 9 MB here.
_CHILD = """
from pathlib import Path
from momservice.heap import release_free_memory
from momservice.policy import PolicySet
from momservice.policy_files import find_policy_files, read_policy_texts
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1])
texts = read_policy_texts(find_policy_files([Path("policies")]))
policies = PolicySet(texts)
before = rss()
release_free_memory()
print(before, rss())
"""


def test_freed_heap_goes_back_to_the_system():
    out = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True,
                         check=True, timeout=120, cwd=REPO).stdout.split()
    before, after = int(out[0]), int(out[1])
    assert before - after > 3072, f"VmRSS {before} -> {after} KiB"


def test_calling_it_again_is_harmless():
    release_free_memory()
    release_free_memory()


def test_trims_after_the_first_evaluations_then_rarely(monkeypatch):
    trims = []
    releaser = ReleaseAfterEvaluations(every=16)
    monkeypatch.setattr(heap, "release_free_memory", lambda: trims.append(releaser.evaluations))
    for _ in range(50):
        releaser.evaluated(None)
    assert trims == [1, 2, 4, 8, 16, 32, 48]


def test_momd_trims_after_its_evaluations(tmp_path, monkeypatch):
    # The real engine's evaluations reach the releaser build_service attaches.
    trims = []
    monkeypatch.setattr(heap, "release_free_memory", lambda: trims.append("trim"))
    service = Setup(tmp_path).service()
    [releaser] = [o for o in service.engine.observers if isinstance(o, ReleaseAfterEvaluations)]

    async def body():
        await service.start()
        try:
            await service.evaluate_now(dry_run=True)
        finally:
            await service.stop()

    asyncio.run(body())
    assert releaser.evaluations == 2
    assert trims == ["trim", "trim"]
