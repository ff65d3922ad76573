"""The policy language of MoM: parser, compiler, entities and policy sets.

Pure: nothing here reads or writes files, talks to a hypervisor or logs.
"""

from .compiler import compile_policy
from .entity import Entity
from .errors import PolicyBudgetError, PolicyError, PolicyLimitError, PolicyTrialError
from .parser import parse
from .policyset import RESERVED_NAMES, EvaluationResult, PolicySet

__all__ = ["Entity", "EvaluationResult", "PolicyBudgetError", "PolicyError", "PolicyLimitError",
           "PolicySet", "PolicyTrialError", "RESERVED_NAMES", "compile_policy", "parse"]
