"""Telling the admin once why a guest's control was refused, not every cycle."""

from __future__ import annotations

import logging
from typing import Any

from ..journal_fields import guest_fields


class RefusalLog:
    """Warns about a refused control once per guest and reason.

    A policy asks again at every evaluation; the same refusal logged every
    second would bury everything else.  A new reason is logged again, and
    ``accepted`` forgets a guest's refusals once its control applies.
    """

    def __init__(self, logger: logging.Logger, mechanism: str) -> None:
        self._log = logger
        self._mechanism = mechanism
        self._said: dict[tuple[str, str], str] = {}

    def refused(self, uuid: str, name: str | None, control: str, reason: str,
                value: Any = None) -> None:
        """Log (once) that ``control`` of guest ``uuid`` was not applied and why."""
        if self._said.get((uuid, control)) == reason:
            return
        self._said[(uuid, control)] = reason
        who = f"{name} ({uuid})" if name else uuid
        shown = "" if value is None else f" {value!r}"
        self._log.warning("Guest %s: %s control %s%s refused: %s (logged once until "
                          "the reason changes)", who, self._mechanism, control, shown, reason,
                          extra=guest_fields(uuid, name))

    def accepted(self, uuid: str, control: str) -> None:
        """``control`` of guest ``uuid`` applied: a later refusal is news again."""
        self._said.pop((uuid, control), None)

    def forget(self, uuids: set[str]) -> None:
        """Drop what was said about guests not in ``uuids`` (gone)."""
        for key in [k for k in self._said if k[0] not in uuids]:
            del self._said[key]
