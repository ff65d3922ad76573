"""The durable store of the policies set over the bus, on a temporary state dir."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from momservice import policy_store
from momservice.policy_store import PolicyStore, check_name


@pytest.fixture
def store(tmp_path: Path) -> PolicyStore:
    return PolicyStore(tmp_path / "state")


def listing(store: PolicyStore) -> list[str]:
    return sorted(p.name for p in store.directory.iterdir())


# -- names -----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["a", "10-balloon", "my_policy.v2", "A-Z.0_9", "x" * 64])
def test_good_names_are_accepted(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "../x", "..", ".", ".hidden", "a/b", "/abs", "a\\b",
                                  "x" * 65, "x\n", "\nx", "a\x00b", "tab\tname", "sp ace",
                                  "é", None, 5])
def test_bad_names_are_refused(name: object, store: PolicyStore) -> None:
    with pytest.raises(ValueError, match="policy name"):
        check_name(name)
    if isinstance(name, str):
        with pytest.raises(ValueError):
            store.save(name, "1")
        with pytest.raises(ValueError):
            store.delete(name)
    # Nothing was created, least of all outside the store.
    assert not store.directory.exists()


# -- saving ----------------------------------------------------------------------

def test_save_creates_the_directory_and_writes_the_whole_text(store: PolicyStore) -> None:
    text = "# héllo\n(def x 1)\n" + "(+ 1 2)\n" * 10000  # larger than one page
    path = store.save("50-mine", text)
    assert path == store.directory / "50-mine.policy"
    assert path.read_text(encoding="utf-8") == text
    assert listing(store) == ["50-mine.policy"]  # no temporary file left
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE(store.directory.stat().st_mode) == 0o755
    assert store.load() == {"50-mine": text}
    assert store.names() == {"50-mine"}


def test_save_replaces_and_fsyncs_file_and_directory(store: PolicyStore, monkeypatch) -> None:
    store.save("p", "old")
    # fsync cannot be observed from user space after the fact; recording the
    # calls checks that both the file and its directory are synced, and that
    # the file is synced before the rename makes it visible.
    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        calls.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    def replace(src, dst) -> None:
        calls.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(policy_store.os, "fsync", fsync)
    monkeypatch.setattr(policy_store.os, "replace", replace)
    store.save("p", "new")
    assert calls == ["file", "rename", "dir"]
    assert store.load() == {"p": "new"}
    assert listing(store) == ["p.policy"]


def test_a_failed_rename_keeps_the_old_text_and_leaves_no_temporary_file(
        store: PolicyStore, monkeypatch) -> None:
    store.save("p", "old text")
    # A crash between writing the temporary file and renaming it: os.replace
    # is patched to fail, because the tests run as root and a read-only
    # directory would not stop root from renaming.
    def refuse(src, dst) -> None:
        assert Path(src).read_text() == "new text"  # fully written before the rename
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(policy_store.os, "replace", refuse)
    with pytest.raises(OSError, match="No space"):
        store.save("p", "new text")
    assert store.load() == {"p": "old text"}
    assert listing(store) == ["p.policy"]


def test_text_that_cannot_be_utf8_is_refused_before_writing(store: PolicyStore) -> None:
    with pytest.raises(ValueError):
        store.save("p", "lone surrogate \udc80")
    with pytest.raises(ValueError):
        store.save("p", b"bytes")  # type: ignore[arg-type]
    assert store.load() == {}


# -- loading -----------------------------------------------------------------------

def test_load_skips_a_corrupt_file_and_names_it(store: PolicyStore, caplog) -> None:
    store.save("good", "(+ 1 2)")
    bad = store.directory / "bad.policy"
    bad.write_bytes(b"(+ 1 \xff\xfe)")
    caplog.set_level(logging.ERROR)
    assert store.load() == {"good": "(+ 1 2)"}
    assert str(bad) in caplog.text
    # Still a stored policy by name: it can be replaced or deleted.
    assert store.names() == {"good", "bad"}


def test_load_ignores_what_is_not_a_policy_file(store: PolicyStore) -> None:
    store.save("p", "1")
    (store.directory / ".hidden.policy").write_text("2")
    (store.directory / "notes.txt").write_text("3")
    (store.directory / ".p.policy.abc.tmp").write_text("4")  # a crash's leftover
    (store.directory / "dir.policy").mkdir()
    (store.directory / "bad name.policy").write_text("5")
    assert store.load() == {"p": "1"}
    assert store.names() == {"p"}


def test_a_missing_directory_is_an_empty_store(store: PolicyStore) -> None:
    assert store.load() == {} and store.names() == set()
    assert store.delete("p") is False
    assert store.delete_all() == []
    assert not store.directory.exists()


# -- deleting ------------------------------------------------------------------------

def test_delete_and_delete_all(store: PolicyStore) -> None:
    for name in ("a", "b", "c"):
        store.save(name, name)
    (store.directory / "notes.txt").write_text("kept")
    (store.directory / ".a.policy.x1y2.tmp").write_text("leftover")
    assert store.delete("b") is True
    assert store.delete("b") is False
    assert store.load() == {"a": "a", "c": "c"}
    assert store.delete_all() == ["a", "c"]
    assert store.load() == {}
    assert listing(store) == ["notes.txt"]  # not ours: left alone
