"""The one exception type of the policy language (one of the core's errors)."""

from __future__ import annotations

from ..errors import MomError


class PolicyError(MomError):
    """A policy failed to parse, check or evaluate.

    ``message`` says what went wrong, ``line`` where (when the error comes
    from the text) and ``policy`` in which named policy of a set.
    """

    def __init__(self, message: str, line: int | None = None,
                 policy: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.policy = policy

    def __str__(self) -> str:
        text = self.message
        if self.line is not None:
            text = f"{text} on line {self.line}"
        if self.policy is not None:
            text = f"policy {self.policy}: {text}"
        return text

    def located(self, policy: str) -> "PolicyError":
        """Name the policy the error comes from, unless it is named already."""
        if self.policy is None:
            self.policy = policy
        return self


class PolicyLimitError(PolicyError):
    """An evaluation hit one of its bounds: call depth, nesting or steps."""


class PolicyBudgetError(PolicyLimitError):
    """An evaluation ran out of its step budget.

    Unlike other errors inside a guest's item of ``with``, this one ends the
    whole evaluation: the budget is shared, so the next guest would fail too.
    """


class PolicyTrialError(PolicyError):
    """A change of policies or parameters was refused: the set it would make
    compiles, but fails when evaluated once on the current statistics.

    ``cause`` is the evaluation's error; ``guest`` names the guest whose
    item failed, if it was one.  Nothing was changed.
    """

    def __init__(self, cause: PolicyError, guest: str | None = None) -> None:
        where = f" for guest {guest}" if guest is not None else ""
        super().__init__(f"{cause.message}{where} (evaluated once on the current "
                         f"statistics; nothing was changed)", cause.line, cause.policy)
        self.cause = cause
        self.guest = guest
