"""The core's own errors: what an operation of momd may refuse with.

Every operation a window (the D-Bus layer, a test, a tool) calls raises
only these when it refuses: :class:`NotFound`, :class:`InvalidArgument`,
:class:`Failed`, and the policy language's ``PolicyError`` (a policy that
does not parse or check) and ``PolicyTrialError`` (a change whose policy
set fails when evaluated once), which are part of the family.  Anything
else escaping an operation is a bug, and a window reports it as one.

``NotFound`` is also a ``KeyError`` and ``InvalidArgument`` a
``ValueError``, so that code written against the built-in types keeps
working; the converse does not hold: a stray ``KeyError`` is no
``NotFound``.
"""

from __future__ import annotations


class MomError(Exception):
    """The base of every refusal the core means; ``str()`` is the message."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else self.__class__.__name__


class NotFound(MomError, KeyError):
    """No such policy, guest or statistic; the message says which."""


class InvalidArgument(MomError, ValueError):
    """An argument the operation cannot take; the message says what is allowed."""


class Failed(MomError):
    """The operation was valid but the host refused it (the kernel, the disk,
    the hypervisor); the message says what failed."""
