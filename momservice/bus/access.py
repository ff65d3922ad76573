"""Who may call what: authorization made structural.

Every exported method and every writable property of a ``MomInterface``
must declare its access, with ``@requires(ACTION)`` (checked with polkit
before the body runs) or ``@public`` (reading only).  A class that exports
a member without saying so fails when it is defined, so a new mutating
method cannot slip in unguarded.  Both decorators also turn any exception
into a contract error, so no reply carries a traceback.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Awaitable, Callable, Protocol

from dbus_next import Message
from dbus_next.service import ServiceInterface

from .connection import (current_message, init_service_interface, is_exported_method,
                         property_setter)
from .errors import to_dbus_error

_ACCESS = "__mom_access__"
_PUBLIC = "public"


class Authorizer(Protocol):
    async def check(self, message: Message | None, action: str) -> None: ...


def _exported(fn: Callable[..., Any], access: str,
              action: str | None) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(fn)
    async def exported(self: "MomInterface", *args: Any) -> Any:
        try:
            if action is not None:
                await self.authorizer.check(current_message.get(), action)
            result = fn(self, *args)
            if inspect.isawaitable(result):
                result = await result
            return result
        except Exception as e:
            raise to_dbus_error(e) from None
    setattr(exported, _ACCESS, access)
    return exported


def requires(action: str) -> Callable:
    """Guard a method or property setter with the polkit action ``action``."""
    return lambda fn: _exported(fn, action, action)


def public(fn: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """Mark a method as reading only: open to every local user."""
    return _exported(fn, _PUBLIC, None)


def declared_access(member: Any) -> str | None:
    """The action (or "public") a member declared, None when it declared nothing."""
    return getattr(member, "__dict__", {}).get(_ACCESS)


class MomInterface(ServiceInterface):
    """Base of our exported interfaces: checks access declarations at class creation."""

    def __init__(self, name: str, authorizer: Authorizer) -> None:
        init_service_interface(self, name)
        self.authorizer = authorizer

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for attr, member in vars(cls).items():
            if is_exported_method(member):
                if declared_access(member) is None:
                    raise TypeError(f"{cls.__name__}.{attr}: an exported method must be "
                                    "decorated with @requires(ACTION) or @public")
            setter = property_setter(member)
            if setter is not None and declared_access(setter) in (None, _PUBLIC):
                raise TypeError(f"{cls.__name__}.{attr}: a writable property's setter must "
                                "be decorated with @requires(ACTION)")

    @classmethod
    def actions(cls) -> dict[str, str]:
        """Member name to the action guarding it (for documentation and tests)."""
        found = {}
        for attr, member in vars(cls).items():
            action = declared_access(member) or declared_access(property_setter(member))
            if action and action != _PUBLIC:
                found[attr] = action
        return found
