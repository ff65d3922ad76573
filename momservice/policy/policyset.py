"""A named set of policies, evaluated as one program in order of name."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import EllipsisType
from typing import Any

from .builtins import BUILTINS
from .codecache import CodeCache, default_code_cache
from .codegen import CompiledPolicy
from .compiler import RESERVED_WORDS, compile_policy
from .entity import Entity
from .errors import PolicyError, PolicyLimitError, PolicyTrialError
from .reads import FieldsRead, fields_read
from .records import record_controls
from .runtime import Env

#: Step budget of one evaluation, in evaluated nodes (roughly): a runaway
#: policy ends in well under a second, while 1000 guests running the shipped
#: policies use a few percent of it.
DEFAULT_MAX_STEPS = 2_000_000
#: Deepest nesting of user function calls (a call of a function that
#: calls none is not counted: it cannot nest further).
DEFAULT_MAX_DEPTH = 100

#: What every evaluation binds: the host and the managed guests.
HOST_BINDING = "Host"
GUESTS_BINDING = "Guests"

#: Names a policy parameter may not take: the language's own words, the
#: built-in functions and the entities bound at every evaluation.
RESERVED_NAMES: frozenset[str] = (RESERVED_WORDS | set(BUILTINS)
                                  | {HOST_BINDING, GUESTS_BINDING})


@dataclass
class EvaluationResult:
    """What one evaluation decided.

    When ``error`` is set the evaluation failed outside a per-guest item and
    carries no controls at all; a guest whose item failed is in
    ``guest_errors`` and has no entry in ``guest_controls``.
    """

    host_controls: dict[str, Any] = field(default_factory=dict)
    guest_controls: dict[Entity, dict[str, Any]] = field(default_factory=dict)
    guest_errors: dict[Entity, PolicyError] = field(default_factory=dict)
    error: PolicyError | None = None
    values: list[Any] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    #: control name -> entity -> (policy, line) of the ``Control`` call
    #: whose value won (the last one made in the evaluation).
    control_origins: Mapping[str, dict[Entity, tuple[str | None, int]]] = \
        field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None


class PolicySet:
    """The administrator's named policies, compiled, ready to evaluate.

    Changes are all-or-nothing: a text that does not compile raises
    PolicyError and leaves the set as it was, so a bad upload never leaves
    the host unmanaged.

    ``code_cache`` keeps the compiled code of the policies across runs (see
    ``codecache``); by default the one given to ``use_code_cache``, if any.
    None: no cache.  Which cache is used never changes what the set does.
    """

    def __init__(self, policies: Mapping[str, str] | None = None, *,
                 max_steps: int = DEFAULT_MAX_STEPS,
                 max_depth: int = DEFAULT_MAX_DEPTH,
                 code_cache: CodeCache | None | EllipsisType = ...) -> None:
        self.max_steps = max_steps
        self.max_depth = max_depth
        self.code_cache: CodeCache | None = \
            default_code_cache() if code_cache is ... else code_cache
        self._texts: dict[str, str] = {}
        self._compiled: dict[str, CompiledPolicy] = {}
        self._program: list[tuple[str, list]] = []
        self._reads: FieldsRead | None = None
        if policies:
            self.replace(policies)

    @property
    def names(self) -> list[str]:
        """Policy names in evaluation order."""
        return [name for name, _ in self._program]

    @property
    def texts(self) -> dict[str, str]:
        """Name to text, in evaluation order."""
        return {name: self._texts[name] for name in self.names}

    def text(self, name: str) -> str:
        """The text of one policy; KeyError when there is none of that name."""
        return self._texts[name]

    def __contains__(self, name: object) -> bool:
        return name in self._texts

    def __len__(self) -> int:
        return len(self._texts)

    def set_policy(self, name: str, text: str) -> None:
        """Add or replace one policy; PolicyError (set unchanged) if it does not compile."""
        compiled = compile_policy(text, name)
        self._texts[name] = text
        self._compiled[name] = compiled
        self._reorder()

    def delete_policy(self, name: str) -> None:
        """Remove one policy; KeyError when there is none of that name."""
        del self._texts[name]
        del self._compiled[name]
        self._reorder()

    def replace(self, policies: Mapping[str, str]) -> None:
        """Swap in a whole new set; PolicyError (set unchanged) if any text fails."""
        compiled = {name: compile_policy(text, name) for name, text in policies.items()}
        self._texts = dict(policies)
        self._compiled = compiled
        self._reorder()

    def copy(self) -> "PolicySet":
        """Another set with the same policies (sharing their compiled code)
        and limits, to try a change on before making it."""
        other = PolicySet(max_steps=self.max_steps, max_depth=self.max_depth,
                          code_cache=self.code_cache)
        other.take(self)
        return other

    def take(self, other: "PolicySet") -> None:
        """Become the same set as ``other``: its policies, compiled already."""
        self._texts = dict(other._texts)
        self._compiled = dict(other._compiled)
        self._reorder()

    def _reorder(self) -> None:
        # A variable that a function anywhere in the set reads from its
        # caller must stay visible to it (dynamic scoping): the names the
        # def bodies reference freely decide which bindings may be locals.
        cache = self.code_cache
        for compiled in self._compiled.values():
            compiled.analyse(cache)
        free = frozenset().union(*(c.free for c in self._compiled.values()))
        # What the other policies may bind decides which calls (of built-ins,
        # of a policy's own defs) can be written without a lookup.
        self._program = [(name, compiled.program(free, frozenset().union(
                              *(c.binds for n, c in self._compiled.items() if n != name)), cache))
                         for name, compiled in sorted(self._compiled.items())]
        self._reads: FieldsRead | None = None

    @property
    def reads(self) -> FieldsRead:
        """The statistics the set's code reads (see ``reads``), found once."""
        if self._reads is None:
            found = FieldsRead()
            for compiled in self._compiled.values():
                found = found | fields_read(compiled.tree, HOST_BINDING)
            self._reads = found
        return self._reads

    def evaluate(self, host: Entity, guests: Iterable[Entity],
                 params: Mapping[str, Any] | None = None, *,
                 trial: bool = False) -> EvaluationResult:
        """Run the whole set once over the newest samples of the entities.

        Guests whose newest sample lacks a required statistic are left out of
        ``Guests`` for this round.  A ``trial`` leaves the entities as they
        were: what the policy stores with ``SetVar`` is kept for this run only.
        """
        # is_complete() without the call: asked for every guest, every time.
        managed = [g for g in guests if g._complete]
        bindings: dict[str, Any] = dict(BUILTINS)
        if params:
            # The compiled code calls the built-ins in place (see codegen).
            hidden = sorted(set(params) & set(BUILTINS))
            if hidden:
                return EvaluationResult(error=PolicyError(
                    f"a parameter may not be named like a built-in function: {hidden[0]}"))
            bindings.update(params)
        bindings[HOST_BINDING] = host
        bindings[GUESTS_BINDING] = managed
        env = Env(bindings, max_steps=self.max_steps, max_depth=self.max_depth,
                  keep_variables=not trial)
        result = EvaluationResult(messages=env.messages, control_origins=env.origins)
        policy = None
        try:
            for policy, expressions in self._program:
                for expression in expressions:
                    result.values.append(expression(env))
        except PolicyError as e:
            result.error = e.located(policy) if policy else e
        except RecursionError:
            result.error = PolicyLimitError("evaluation nested too deeply", None, policy)
        result.guest_errors = env.failed
        if result.error is not None:
            return result
        record_controls(env.writes, [g for g in managed if g not in env.failed], env.controls)
        for entity, controls in env.controls.items():
            if entity is host:
                result.host_controls = controls
            elif entity not in env.failed:
                result.guest_controls[entity] = controls
        return result

    def try_out(self, host: Entity, guests: Iterable[Entity],
                params: Mapping[str, Any] | None = None) -> EvaluationResult:
        """Evaluate once as a trial (nothing kept); PolicyTrialError when the
        evaluation fails, or the item of any guest does: either would leave
        guests unmanaged."""
        result = self.evaluate(host, guests, params, trial=True)
        if result.error is not None:
            raise PolicyTrialError(result.error)
        for guest, error in result.guest_errors.items():
            raise PolicyTrialError(error, guest.name)
        return result
