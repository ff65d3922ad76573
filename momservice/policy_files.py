"""Finding and reading policy files on disk (the policy engine itself does no I/O).

A policy file is ``NAME.policy``; files whose names start with ``.`` or do
not end in ``.policy`` are ignored.  Several sources (directories or single
files) can be layered: a later source overrides an earlier one by name.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

SUFFIX = ".policy"


def is_policy_file(path: Path) -> bool:
    """True for ``NAME.policy`` files that are not hidden."""
    return path.name.endswith(SUFFIX) and not path.name.startswith(".")


def policy_name(path: Path) -> str:
    """The policy name of a file: its name without ``.policy``."""
    name = path.name
    return name[:-len(SUFFIX)] if name.endswith(SUFFIX) else name


def find_policy_files(sources: Iterable[Path]) -> dict[str, Path]:
    """Name to file over layered sources; a later source wins by name.

    A directory contributes its policy files; a file given by itself is
    taken whatever its name.  A missing source raises FileNotFoundError.
    """
    found: dict[str, Path] = {}
    for source in sources:
        if source.is_dir():
            for path in sorted(source.iterdir()):
                if is_policy_file(path) and path.is_file():
                    found[policy_name(path)] = path
        elif source.exists():
            found[policy_name(source)] = source
        else:
            raise FileNotFoundError(f"no such policy file or directory: {source}")
    return found


def read_policy_texts(files: dict[str, Path]) -> dict[str, str]:
    """Read each file as UTF-8 text; OSError and UnicodeDecodeError propagate."""
    return {name: path.read_text(encoding="utf-8") for name, path in files.items()}
