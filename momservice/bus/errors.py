"""The one mapping from core exceptions to the contract's error names.

No reply may ever carry a Python traceback: whatever a method raises ends
here and becomes a named error with a short message; the unexpected ones
are logged in full on our side only.
"""

from __future__ import annotations

import logging

from dbus_next import DBusError

from ..contract import FAILED, INVALID_ARGUMENT, NOT_FOUND, POLICY_FAILED, POLICY_SYNTAX
from ..errors import Failed, InvalidArgument, NotFound
from ..policy import PolicyError, PolicyTrialError

log = logging.getLogger(__name__)


#: The core's errors and the names they travel under; nothing else is mapped.
_CORE_ERRORS: tuple[tuple[type[BaseException], str], ...] = (
    (PolicyTrialError, POLICY_FAILED),   # before PolicyError: it is one
    (PolicyError, POLICY_SYNTAX),
    (InvalidArgument, INVALID_ARGUMENT),
    (NotFound, NOT_FOUND),
    (Failed, FAILED),
)


def to_dbus_error(error: BaseException) -> DBusError:
    """The named D-Bus error for an exception raised by the core.

    Only the core's own errors (``momservice.errors`` and the policy
    errors) are refusals with a meaning; any other exception is a bug: the
    caller gets Failed "internal error" and the traceback goes to the log.
    """
    if isinstance(error, DBusError):
        return error
    for kind, name in _CORE_ERRORS:
        if isinstance(error, kind):
            return DBusError(name, str(error))
    log.error("internal error in a D-Bus method", exc_info=error)
    return DBusError(FAILED, f"internal error ({type(error).__name__}); see the service log")
