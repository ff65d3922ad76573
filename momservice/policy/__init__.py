"""The policy language of MoM: parser, compiler, entities and policy sets.

Pure: nothing here reads or writes files, talks to a hypervisor or logs.
"""

from .codecache import CodeCache, use_code_cache
from .compiler import compile_policy, forget_compiled_policies
from .entity import Entity
from .errors import PolicyBudgetError, PolicyError, PolicyLimitError, PolicyTrialError
from .parser import parse
from .policyset import RESERVED_NAMES, EvaluationResult, PolicySet

__all__ = ["CodeCache", "Entity", "EvaluationResult", "PolicyBudgetError", "PolicyError",
           "PolicyLimitError", "PolicySet", "PolicyTrialError", "RESERVED_NAMES", "compile_policy",
           "forget_compiled_policies", "parse", "use_code_cache"]
