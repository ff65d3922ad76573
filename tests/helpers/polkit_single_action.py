"""One polkit action of ours in an action file of its own, for a test's polkitd.

polkitd reads actions from the one machine-wide directory, where the test
runs of every checkout on the machine install their own
``org.ovirt.mom1.policy`` (tests/helpers/private_bus.py): while several
branches are developed at once, the file there may be another checkout's,
without an action this checkout has just added.  A file holding only that
action, as ``polkit/org.ovirt.mom1.policy`` defines it, makes the action
known whichever version is installed.  Once every checkout ships the action
this is redundant (and harmless: the definitions are the same).
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Iterator

from tests.helpers.private_bus import MOM_POLKIT_POLICY, ActionFiles


def single_action_file(action_id: str, directory: Path) -> Path:
    """Write ``action_id``'s definition alone into an action file in ``directory``."""
    text = MOM_POLKIT_POLICY.read_text()
    action = re.search(rf'  <action id="{re.escape(action_id)}">.*?</action>\n', text, re.S)
    if action is None:
        raise AssertionError(f"{action_id} is not in {MOM_POLKIT_POLICY}")
    head = text[:text.index("<policyconfig>")]
    path = Path(directory) / f"org.ovirt.mom1.test-{action_id.rsplit('.', 1)[-1]}.policy"
    path.write_text(f"{head}<policyconfig>\n{action.group(0)}</policyconfig>\n")
    return path


@contextlib.contextmanager
def installed_action(action_id: str, directory: Path) -> Iterator[None]:
    """``action_id`` installed in polkit's actions directory while inside
    (before the polkitd that needs it starts); removed after, even when
    another checkout's fixture is the last to uninstall (that one restores
    only the files it installed itself)."""
    source = single_action_file(action_id, directory)
    actions = ActionFiles([source])
    actions.install()
    try:
        yield
    finally:
        actions.uninstall()
        with contextlib.suppress(FileNotFoundError):
            (actions.actions_dir / source.name).unlink()
