"""The one mapping from core exceptions to the contract's error names.

No reply may ever carry a Python traceback: whatever a method raises ends
here and becomes a named error with a short message; the unexpected ones
are logged in full on our side only.
"""

from __future__ import annotations

import logging

from dbus_next import DBusError

from ..contract import FAILED, INVALID_ARGUMENT, NOT_FOUND, POLICY_FAILED, POLICY_SYNTAX
from ..hypervisor import HypervisorError
from ..policy import PolicyError, PolicyTrialError

log = logging.getLogger(__name__)


def to_dbus_error(error: BaseException) -> DBusError:
    """The named D-Bus error for an exception raised by the core."""
    if isinstance(error, DBusError):
        return error
    if isinstance(error, PolicyTrialError):
        return DBusError(POLICY_FAILED, str(error))
    if isinstance(error, PolicyError):
        return DBusError(POLICY_SYNTAX, str(error))
    if isinstance(error, (ValueError, TypeError)):
        return DBusError(INVALID_ARGUMENT, str(error))
    if isinstance(error, KeyError):
        return DBusError(NOT_FOUND, str(error.args[0]) if error.args else "not found")
    if isinstance(error, (HypervisorError, OSError)):
        return DBusError(FAILED, str(error))
    log.error("unexpected error in a D-Bus method", exc_info=error)
    return DBusError(FAILED, f"internal error ({type(error).__name__}); see the service log")
