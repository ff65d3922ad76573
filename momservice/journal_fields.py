"""Journal fields saying what a log message is about: a guest, a policy.

Passed as ``extra=`` to a logging call, these mappings become attributes
of the log record.  python-systemd's ``JournalHandler`` sends every
attribute of a record as a journal field of the same name, and journald
keeps only names of upper-case letters, digits and underscores: so these
upper-case names arrive as fields (the record's own lower-case attributes
are dropped by journald), and an administrator can select with
``journalctl -u momd GUEST_NAME=db1`` or ``MOM_POLICY=50-local``.
Stream and file formatters never look at them: other handlers print the
same lines as before.

A field whose value is unknown is left out rather than sent empty, so a
selection on it never matches a message that only lacks the value.
"""

from __future__ import annotations

from .policy.errors import PolicyError, PolicyTrialError

GUEST_NAME = "GUEST_NAME"
GUEST_UUID = "GUEST_UUID"
MOM_POLICY = "MOM_POLICY"
MOM_POLICY_LINE = "MOM_POLICY_LINE"


def guest_fields(uuid: str | None, name: str | None = None) -> dict[str, str]:
    """The fields of a message about one guest."""
    fields: dict[str, str] = {}
    if name:
        fields[GUEST_NAME] = str(name)
    if uuid:
        fields[GUEST_UUID] = str(uuid)
    return fields


def policy_fields(policy: str | None, line: int | None = None) -> dict[str, str]:
    """The fields of a message about one policy (and its line, when known)."""
    fields: dict[str, str] = {}
    if policy:
        fields[MOM_POLICY] = str(policy)
        if line is not None:
            fields[MOM_POLICY_LINE] = str(line)
    return fields


def policy_error_fields(error: PolicyError) -> dict[str, str]:
    """The fields of a message about a policy error: its policy and line,
    and for a refused trial that failed on one guest, that guest's name."""
    fields = policy_fields(error.policy, error.line)
    if isinstance(error, PolicyTrialError):
        fields.update(guest_fields(None, error.guest))
    return fields
