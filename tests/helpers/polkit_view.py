"""polkitd with rules and groups of the test's own, nothing of the machine changed.

polkitd reads rules from /etc/polkit-1/rules.d and answers
``subject.isInGroup()`` from the user database (NSS ``files``: it looks the
caller's groups up in /etc/group at each check, whatever groups the calling
process has).  To try a rule with a throw-away group, polkitd runs in a
mount namespace of its own where /etc/group is a copy of the machine's with
the test's groups added, and /etc/polkit-1/rules.d is a directory of the
test holding the rules to try (``/usr/share/polkit-1/rules.d``, the stock
rules, stays as it is).  No groupadd, no file of the machine edited, no
other polkitd affected: when this polkitd exits its namespace is gone.

The members are existing users (``nobody``): the bus daemon, which sees the
machine's user database, refuses connections from uids it cannot look up.
``command_prefix`` is for ``Polkitd(command_prefix=...)``.
"""

from __future__ import annotations

import os
import pwd
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

RULES_DIR = "/etc/polkit-1/rules.d"
FIRST_GID = 61000   # the test's groups get free gids from here


class PolkitView:
    """The files polkitd sees in place of /etc/group and its rules directory."""

    def __init__(self, root: Path, *, rules: Mapping[str, str],
                 groups: Mapping[str, Iterable[str]]) -> None:
        self.group = root / "group"
        self.rules_dir = root / "rules.d"
        # A group of the same name on the machine is left out of the view:
        # the test decides who is in it.
        kept = [line for line in Path("/etc/group").read_text().splitlines()
                if line.split(":", 1)[0] not in groups]
        taken = {int(line.split(":")[2]) for line in kept if line.count(":") == 3}
        gids = (i for i in range(FIRST_GID, 65534) if i not in taken)
        for members in groups.values():
            for user in members:
                pwd.getpwnam(user)  # KeyError: the bus would refuse that user
        self.group.write_text("".join(f"{line}\n" for line in kept) + "".join(
            f"{name}:x:{next(gids)}:{','.join(members)}\n" for name, members in groups.items()))
        os.chmod(self.group, 0o644)
        # As the real directory: polkitd's own, 0700 (it reads it after
        # dropping root).
        self.rules_dir.mkdir()
        for name, text in rules.items():
            (self.rules_dir / name).write_text(text)
            os.chmod(self.rules_dir / name, 0o644)
        os.chown(self.rules_dir, pwd.getpwnam("polkitd").pw_uid, 0)
        os.chmod(self.rules_dir, 0o700)

    def command_prefix(self) -> list[str]:
        """A prefix that runs (execs) a command in the private view."""
        return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                f'mount --bind "$1" /etc/group && mount --bind "$2" {RULES_DIR}'
                ' && shift 2 && exec "$@"',
                "sh", str(self.group), str(self.rules_dir)]


def unavailable_reason() -> str | None:
    """Why a private view cannot be made here, None when it can."""
    if os.geteuid() != 0:
        return "a private view for polkitd needs root (a mount namespace)"
    for tool in ("unshare", "gdbus"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not Path(RULES_DIR).is_dir():
        return f"{RULES_DIR} does not exist (polkitd not installed from Debian's package?)"
    try:
        pwd.getpwnam("polkitd")
    except KeyError:
        return "the polkitd user does not exist"
    return None
