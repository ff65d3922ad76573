"""Exit codes of momctl, one per kind of failure an admin script may test.

==  ================  ==========================================================
 0  OK                success
 1  POLICY_ERROR      a policy failed to parse, check or evaluate (offline
                      tools, or the service answered ``PolicySyntax`` or
                      ``PolicyFailed``)
 2  INVALID_ARGUMENT  bad command line or input (unreadable file, malformed
                      JSON or size), or the service answered ``InvalidArgument``
 3  NOT_RUNNING       momd is not running (its name has no owner), or the bus
                      cannot be reached
 4  ACCESS_DENIED     the bus or polkit refused (``AccessDenied``,
                      ``InteractiveAuthorizationRequired``)
 5  NOT_FOUND         no such guest, policy or field (``NotFound``)
 6  FAILED            the service, the hypervisor or the kernel failed
                      (``Failed``, no reply, any other error)
130 INTERRUPTED       stopped by Ctrl-C (``momctl monitor`` exits 0 instead)
==  ================  ==========================================================
"""

from __future__ import annotations

from .. import contract

OK = 0
#: A policy failed to parse, check or evaluate.
POLICY_ERROR = 1
#: Bad command line or input (unreadable file, malformed JSON).
INVALID_ARGUMENT = 2
#: momd is not on the bus (or the bus cannot be reached).
NOT_RUNNING = 3
#: The bus or polkit refused the call.
ACCESS_DENIED = 4
#: No such guest, policy or field.
NOT_FOUND = 5
#: The service, the hypervisor or the kernel failed.
FAILED = 6
#: Interrupted by SIGINT (Ctrl-C), as shells report it.
INTERRUPTED = 130

#: The exit codes as ``momctl --help`` lists them.
EPILOG = """\
exit codes:
  0    OK
  1    policy error (a policy does not parse or check, or fails when evaluated)
  2    invalid argument (bad command line or input; the service refused a value)
  3    momd is not running, or the bus cannot be reached
  4    access denied (run as root, or with a polkit authentication agent)
  5    not found (no such guest, policy or field)
  6    failed (the service, the hypervisor or the kernel failed)
  130  interrupted (Ctrl-C)
"""

_SERVICE_GONE = frozenset({
    "org.freedesktop.DBus.Error.ServiceUnknown",
    "org.freedesktop.DBus.Error.NameHasNoOwner",
    "org.freedesktop.DBus.Error.NoServer",
    "org.freedesktop.DBus.Error.Disconnected",
})

_BY_NAME = {
    contract.POLICY_SYNTAX: POLICY_ERROR,
    contract.POLICY_FAILED: POLICY_ERROR,
    contract.INVALID_ARGUMENT: INVALID_ARGUMENT,
    "org.freedesktop.DBus.Error.InvalidArgs": INVALID_ARGUMENT,
    contract.NOT_FOUND: NOT_FOUND,
    "org.freedesktop.DBus.Error.UnknownObject": NOT_FOUND,
    contract.FAILED: FAILED,
    contract.ACCESS_DENIED: ACCESS_DENIED,
    contract.INTERACTIVE_AUTHORIZATION_REQUIRED: ACCESS_DENIED,
    "org.freedesktop.DBus.Error.AuthFailed": ACCESS_DENIED,
}


def for_dbus_error(name: str) -> int:
    """The exit code for a D-Bus error reply named ``name``.

    Activation failures (``org.freedesktop.DBus.Error.Spawn.*``) count as
    "not running"; an error name we do not know is a failure.
    """
    if name in _SERVICE_GONE or name.startswith("org.freedesktop.DBus.Error.Spawn."):
        return NOT_RUNNING
    return _BY_NAME.get(name, FAILED)
