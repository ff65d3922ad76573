"""The policy code cache: a hit does what a miss does, and a bad cache is a miss.

The cache is real (``PolicyCodeCache`` over a temporary directory).  That a
hit compiles nothing is seen by making Python's ``compile`` unavailable to
the code generator while the set loads.
"""

from __future__ import annotations

import json
import marshal
import os
import pwd
import random
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import momservice
from momservice import policy_cache
from momservice.policy import (Entity, PolicySet, codegen, forget_compiled_policies,
                               use_code_cache)
from momservice.config import Config
from momservice.policy_cache import SUFFIX, PolicyCodeCache
from momservice.policy_files import find_policy_files, read_policy_texts

from tests.helpers.as_nobody import nobody_python, privilege_dropper, run_as_nobody
from tests.helpers.policy_code_cache import CACHE_ENV, CountingCache

PROJECT_ROOT = Path(momservice.__file__).resolve().parents[1]
GiB = 1024 * 1024
SETS = {
    "shipped": [PROJECT_ROOT / "policies"],
    "mom": [PROJECT_ROOT / "policies" / "mom"],
    "vdsm-style": [PROJECT_ROOT / "benchmarks" / "policies" / "vdsm-style"],
}
#: A set that uses what the code keeps as constants: a huge integer, a
#: float that is not finite, defs nested and called, dynamic scoping
#: across policies.
ODD = {
    "00-a": "(defvar huge 0x" + "F" * 40 + ")\n(defvar inf (* 1e308 10.0))\n"
            "(def outer (x) (def inner (y) (+ y seen)) (let ((seen x)) (inner 1)))\n",
    "01-b": "(defvar seen 5)\n(def reader () seen)\n"
            "(with Guests g (g.Control \"balloon_target\" (+ (outer 2) (reader))))\n"
            "(list huge inf (- 0 inf) (outer 40))\n",
}


def make_host(free_share: float) -> Entity:
    host = Entity.host(history_length=3)
    total = 64 * GiB
    for _ in range(3):
        free = int(total * free_share)
        host.add_sample({
            "mem_available": total, "mem_free": free, "mem_unused": free // 2,
            "anon_pages": total - free, "swap_total": GiB, "swap_usage": 0,
            "swap_in": 0, "swap_out": 0, "cpu_count": 8, "ksm_run": 1,
            "ksm_pages_to_scan": 100, "ksm_sleep_millisecs": 20,
            "ksm_merge_across_nodes": 1, "ksm_pages_shared": 1000,
            "ksm_pages_sharing": 5000, "ksm_pages_unshared": 200,
            "ksm_pages_volatile": 10, "ksm_full_scans": 3,
            "ksm_shareable": int(total * 0.9), "ksmd_cpu_usage": 2.5,
            "mem_pressure_some": 0.5, "mem_pressure_full": 0.1})
    return host


def make_guests(count: int) -> list[Entity]:
    rng = random.Random(7)
    guests = []
    for i in range(count):
        guest = Entity.guest({"name": f"vm{i}", "uuid": f"u-{i}", "pid": 100 + i},
                             history_length=3)
        maximum = rng.choice((2, 4, 8)) * GiB
        current = (int(maximum * 0.7), maximum, maximum // 4 - 1024)[i % 3]
        for _ in range(3):
            unused = int(current * rng.uniform(0.05, 0.5))
            guest.add_sample({
                "balloon_cur": current, "balloon_max": maximum, "balloon_min": maximum // 4,
                "mem_available": current, "mem_unused": unused, "mem_usable": unused + 1024,
                "disk_caches": 4096, "major_fault": rng.randrange(100),
                "minor_fault": rng.randrange(10000), "swap_in": 0, "swap_out": 0,
                "swap_total": GiB, "swap_usage": 0, "rss": current, "stats_age": 1.0})
        guests.append(guest)
    return guests


def outcome(policies: PolicySet) -> list:
    """Everything two evaluations (a host under pressure, a comfortable one)
    decide, as plain data."""
    found = []
    for share in (0.05, 0.6):
        guests = make_guests(12)
        result = policies.evaluate(make_host(share), guests)
        found.append((
            repr(result.values), str(result.error), result.messages,
            sorted(result.host_controls.items()),
            sorted((g.name, sorted(c.items())) for g, c in result.guest_controls.items()),
            sorted((g.name, str(e)) for g, e in result.guest_errors.items()),
            sorted((name, sorted((e.name, o) for e, o in by.items()))
                   for name, by in result.control_origins.items()),
            [sorted(g.variables.items()) for g in guests]))
    return found


@pytest.fixture
def no_compile(monkeypatch):
    """Within the block: the code generator cannot compile (a hit needs not)."""
    def forbidden(*args, **kwargs):
        raise AssertionError("compiled although the cache holds the code")

    class Block:
        def __enter__(self):
            monkeypatch.setattr(codegen, "compile", forbidden, raising=False)

        def __exit__(self, *exc):
            monkeypatch.delattr(codegen, "compile", raising=False)
    return Block()


def texts_of(name: str) -> dict[str, str]:
    return ODD if name == "odd" else read_policy_texts(find_policy_files(SETS[name]))


def cache_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.name.endswith(SUFFIX)
                  and not p.name.startswith("."))


@pytest.mark.parametrize("name", [*SETS, "odd"])
def test_a_hit_decides_what_a_miss_decides(name, tmp_path, no_compile):
    texts = texts_of(name)
    forget_compiled_policies()
    expected = outcome(PolicySet(texts, code_cache=None))
    forget_compiled_policies()
    cache = PolicyCodeCache(tmp_path)
    assert outcome(PolicySet(texts, code_cache=cache)) == expected  # a miss: stored
    assert len(cache_files(tmp_path)) == 2 * len(texts)  # analysis and program
    forget_compiled_policies()
    with no_compile:
        hit = PolicySet(texts, code_cache=cache)
    assert outcome(hit) == expected


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[:len(data) // 2])
    elif how == "flipped":
        at = len(data) - 10
        path.write_bytes(data[:at] + bytes([data[at] ^ 0x40]) + data[at + 1:])
    elif how == "empty":
        path.write_bytes(b"")
    else:  # garbage with a valid frame: written through the cache itself
        PolicyCodeCache(path.parent).store(path.name[:-len(SUFFIX)], b"\x00not marshal")


@pytest.mark.parametrize("how", ["truncated", "flipped", "empty", "framed garbage"])
def test_a_damaged_entry_is_a_miss(how, tmp_path):
    texts = texts_of("vdsm-style")
    forget_compiled_policies()
    expected = outcome(PolicySet(texts, code_cache=None))
    cache = CountingCache(tmp_path)
    forget_compiled_policies()
    PolicySet(texts, code_cache=cache)
    for path in cache_files(tmp_path):
        _damage(path, how)
    forget_compiled_policies()
    cache.counts = dict.fromkeys(cache.counts, 0)
    assert outcome(PolicySet(texts, code_cache=cache)) == expected
    assert cache.counts["hits"] == 0 or how == "framed garbage"
    # Compiled again, and stored again: the next start hits.
    assert cache.counts["stores"] == 2 * len(texts)
    forget_compiled_policies()
    cache.counts = dict.fromkeys(cache.counts, 0)
    assert outcome(PolicySet(texts, code_cache=cache)) == expected
    assert cache.counts["hits"] == 2 * len(texts) and cache.counts["stores"] == 0


def _kinds(cache: PolicyCodeCache, paths: list[Path]) -> dict[str, bytes]:
    """Kind of entry ("analysis", "program") to the bytes of its file."""
    return {marshal.loads(cache.load(p.name[:-len(SUFFIX)]))[2]: p.read_bytes() for p in paths}


def test_an_entry_under_another_key_is_a_miss(tmp_path):
    # A file renamed (or copied) to the name of another entry: its content
    # says which key it was written for.
    cache = CountingCache(tmp_path)
    forget_compiled_policies()
    PolicySet({"a": "(defvar x 1) x"}, code_cache=cache)
    first = cache_files(tmp_path)
    forget_compiled_policies()
    PolicySet({"a": "(defvar x 2) x"}, code_cache=cache)
    second = [p for p in cache_files(tmp_path) if p not in first]
    planted = _kinds(cache, first)
    for kind, path in ((k, p) for p in second for k in _kinds(cache, [p])):
        path.write_bytes(planted[kind])
    forget_compiled_policies()
    cache.counts = dict.fromkeys(cache.counts, 0)
    policies = PolicySet({"a": "(defvar x 2) x"}, code_cache=cache)
    assert policies.evaluate(make_host(0.5), []).values[-1] == 2
    assert cache.counts["discards"] == 2 and cache.counts["stores"] == 2, cache.counts


def test_another_engine_version_is_a_miss(tmp_path, no_compile):
    texts = texts_of("odd")
    forget_compiled_policies()
    expected = outcome(PolicySet(texts, code_cache=PolicyCodeCache(tmp_path)))
    forget_compiled_policies()
    other = CountingCache(tmp_path)
    other.fingerprint = "another engine"
    assert outcome(PolicySet(texts, code_cache=other)) == expected
    assert other.counts["hits"] == 0 and other.counts["stores"] == 2 * len(texts)
    # Both versions' entries are kept side by side.
    assert len(cache_files(tmp_path)) == 4 * len(texts)
    forget_compiled_policies()
    with no_compile:
        assert outcome(PolicySet(texts, code_cache=PolicyCodeCache(tmp_path))) == expected


def test_the_fingerprint_is_the_engines_source(tmp_path):
    assert PolicyCodeCache(tmp_path).fingerprint == PolicyCodeCache(tmp_path / "b").fingerprint
    engine = Path(momservice.policy.__file__).parent
    # A copy of the package whose engine differs by one comment.
    copy = tmp_path / "copy" / "momservice"
    shutil.copytree(engine.parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    with (copy / "policy" / "codegen.py").open("a") as out:
        out.write("# changed\n")
    probe = subprocess.run(
        [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]);"
         "import momservice.policy_cache as c; print(c.__file__); print(c.engine_fingerprint())",
         str(tmp_path / "copy")], capture_output=True, text=True, check=True)
    where, fingerprint = probe.stdout.split()
    assert where.startswith(str(tmp_path))
    assert fingerprint != PolicyCodeCache(tmp_path).fingerprint


@pytest.mark.parametrize("kind", ["parent is a file", "writable by others"])
def test_an_unusable_directory_still_evaluates(kind, tmp_path):
    if kind == "parent is a file":
        (tmp_path / "file").write_text("")
        directory = tmp_path / "file" / "cache"   # cannot be made, even by root
    else:
        directory = tmp_path / "shared"
        directory.mkdir()
        directory.chmod(0o777)  # anyone could plant code there: not used
    texts = texts_of("vdsm-style")
    forget_compiled_policies()
    expected = outcome(PolicySet(texts, code_cache=None))
    cache = PolicyCodeCache(directory)
    for _ in range(2):
        forget_compiled_policies()
        assert outcome(PolicySet(texts, code_cache=cache)) == expected
    assert not cache.usable()
    if directory.is_dir():
        assert not cache_files(directory)


def test_an_engine_without_its_source_keeps_no_cache(tmp_path, monkeypatch):
    # Only .pyc files installed: versions cannot be told apart.
    def no_source():
        raise FileNotFoundError("no source")
    monkeypatch.setattr(policy_cache, "engine_fingerprint", no_source)
    cache = PolicyCodeCache(tmp_path)
    forget_compiled_policies()
    assert PolicySet({"p": "(+ 1 2)"}, code_cache=cache).evaluate(
        make_host(0.5), []).values == [3]
    assert not cache.usable() and not cache_files(tmp_path)


_AS_NOBODY = """
import json, logging, sys
logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
from momservice.policy import Entity, PolicySet
from momservice.policy_cache import PolicyCodeCache
cache = PolicyCodeCache(sys.argv[1])
host = Entity.host()
host.add_sample({"mem_available": 4, "mem_free": 1})
values = PolicySet({"p": "(defvar x 41) (+ x 1)"}, code_cache=cache).evaluate(host, []).values
print(json.dumps({"usable": cache.usable(), "values": values}))
"""


@pytest.mark.parametrize("mode", [0o500, 0o700], ids=["read-only", "not-its-own"])
def test_a_directory_the_user_cannot_write_still_evaluates(mode):
    """As nobody, whom permissions bind (root writes through them)."""
    if os.geteuid() != 0 or privilege_dropper() is None:
        pytest.skip("needs root, to run as nobody")
    base = Path(tempfile.mkdtemp(prefix="mom-code-cache-"))
    try:
        base.chmod(0o755)
        directory = base / "cache"
        directory.mkdir()
        nobody = pwd.getpwnam("nobody")
        if mode == 0o700:
            directory.chmod(0o700)   # root's: not nobody's to use
        else:
            os.chown(directory, nobody.pw_uid, nobody.pw_gid)
            directory.chmod(mode)    # nobody's, but read-only
        python = nobody_python()
        done = run_as_nobody(python.argv("-c", _AS_NOBODY, str(directory)), python.env(),
                             timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        found = json.loads(done.stdout)
        assert found["values"] == [41, 42]
        assert found["usable"] is (mode == 0o500)
        assert "policy code cache" in done.stderr
        assert not list(directory.iterdir())
    finally:
        shutil.rmtree(base)


def test_a_directory_that_turns_read_only_still_evaluates(tmp_path):
    # Root writes through permissions; a directory replaced by a file
    # after the check is what an unwritable cache looks like to it.
    texts = texts_of("odd")
    forget_compiled_policies()
    expected = outcome(PolicySet(texts, code_cache=None))
    directory = tmp_path / "cache"
    cache = PolicyCodeCache(directory)
    assert cache.usable()
    directory.rmdir()
    directory.write_text("not a directory")
    forget_compiled_policies()
    assert outcome(PolicySet(texts, code_cache=cache)) == expected


def test_the_size_is_bounded_oldest_out(tmp_path):
    cache = PolicyCodeCache(tmp_path, max_entries=6)
    for i in range(10):
        forget_compiled_policies()
        PolicySet({"p": f"(defvar n {i}) n"}, code_cache=cache)
    files = cache_files(tmp_path)
    assert len(files) <= 6
    forget_compiled_policies()
    counting = CountingCache(tmp_path)
    counting.max_entries = 6
    PolicySet({"p": "(defvar n 9) n"}, code_cache=counting)
    assert counting.counts["hits"] == 2  # the newest are kept
    forget_compiled_policies()
    PolicySet({"p": "(defvar n 0) n"}, code_cache=counting)
    assert counting.counts["stores"] == 2  # the oldest went

    small = PolicyCodeCache(tmp_path / "small", max_bytes=1)
    forget_compiled_policies()
    PolicySet({"p": "1"}, code_cache=small)
    assert len(cache_files(tmp_path / "small")) <= 1


def test_entries_are_private_and_no_temporary_file_stays(tmp_path, monkeypatch):
    cache = PolicyCodeCache(tmp_path)
    cache.store("k1", b"one")
    cache.store("k1", b"one again")  # the same key written twice
    cache.store("k2", b"two")
    assert [p.name for p in sorted(tmp_path.iterdir())] == ["k1" + SUFFIX, "k2" + SUFFIX]
    assert {stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()} == {0o600}
    assert (cache.load("k1"), cache.load("k2")) == (b"one again", b"two")

    # A write that fails leaves the entry as it was and nothing beside it.
    class Full(Exception):
        pass

    def fail(*args):
        raise Full

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(Full):
        cache.store("k2", b"lost")
    monkeypatch.undo()
    assert [p.name for p in sorted(tmp_path.iterdir())] == ["k1" + SUFFIX, "k2" + SUFFIX]
    assert cache.load("k2") == b"two"


def test_no_cache_and_the_default_cache(tmp_path, no_compile):
    texts = {"p": "(defvar x 41) (+ x 1)"}
    use_code_cache(None)  # the default unless told (conftest.py may have told)
    forget_compiled_policies()
    assert PolicySet(texts).code_cache is None
    cache = PolicyCodeCache(tmp_path)
    use_code_cache(cache)
    try:
        forget_compiled_policies()
        policies = PolicySet(texts)
        assert policies.code_cache is cache and policies.copy().code_cache is cache
        assert PolicySet(texts, code_cache=None).code_cache is None
        forget_compiled_policies()
        with no_compile:
            assert PolicySet(texts).evaluate(make_host(0.5), []).values[-1] == 42
    finally:
        use_code_cache(None)


def test_where_momd_keeps_the_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("CACHE_DIRECTORY", raising=False)
    config = Config(state_dir=tmp_path / "state")
    assert config.policy_cache_dir == tmp_path / "state" / "cache"
    monkeypatch.setenv("CACHE_DIRECTORY", "/var/cache/mom:/var/cache/other")
    assert config.policy_cache_dir == Path("/var/cache/mom")
    assert Config(cache_dir=tmp_path / "c").policy_cache_dir == tmp_path / "c"
    assert Config(cache_dir=tmp_path / "c", policy_cache=False).policy_cache_dir is None


CONFORMANCE = ["test_language.py", "test_compiled_scoping.py", "test_policyset.py",
               "test_lexer_parser.py", "test_control_origins.py", "test_records.py",
               "test_vdsm_style_cputune.py"]


def test_the_conformance_tests_pass_on_code_from_the_cache(tmp_path):
    """The conformance tests twice, every PolicySet through one cache: the
    second run's policies come from the disk cache (see conftest.py)."""
    if os.environ.get(CACHE_ENV):
        pytest.skip("already running under a code cache")
    here = Path(__file__).parent
    env = dict(os.environ, **{CACHE_ENV: str(tmp_path)})
    runs = []
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
             *[str(here / name) for name in CONFORMANCE]],
            cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        runs.append(json.loads((tmp_path / "stats.json").read_text()))
    first, second = runs
    assert first["stores"] > 300, first
    # The second run compiles only what differs between runs (texts made
    # from the time or randomly); nearly everything is a hit.
    assert second["hits"] > 0.9 * first["stores"], (first, second)
    assert second["discards"] == 0 and first["discards"] == 0, (first, second)


def test_what_the_other_policies_bind_is_part_of_the_key(tmp_path):
    # The same text compiles to other code when another policy of the set
    # rebinds a built-in or the name of one of its defs (codegen: what is
    # written without a lookup): one cache must keep both programs apart.
    shared = "(def f (x) (+ x 1)) (def g () (max (f 1) 5))"
    texts = {"10-a": shared, "20-b": "(g)"}
    rebinding = {"10-a": shared, "20-b": "(def max (a b) a) (def f (x) 100) (g)"}
    host = make_host(0.5)
    for _ in range(2):  # a miss, then a hit, for each set, in turn
        forget_compiled_policies()
        plain = PolicySet(texts, code_cache=CountingCache(tmp_path))
        assert plain.evaluate(host, []).values[-1] == 5
        forget_compiled_policies()
        other = PolicySet(rebinding, code_cache=CountingCache(tmp_path))
        assert other.evaluate(host, []).values[-1] == 100
