"""Controllers: the only parts of mom that change anything.

Each is a mechanism (``base.Mechanism``) registered in ``registry``:
``BalloonController`` resizes guest balloons through the hypervisor
interface; ``KsmController`` writes the KSM settings in sysfs;
``CpuTuneController`` sets guests' vCPU quota and period.  All can run in
dry-run mode, deciding and logging without writing.
"""

from .balloon import BalloonController
from .base import Decision, Mechanism, MechanismContext
from .cputune import CpuTuneController
from .ksm import KsmController
from .registry import MECHANISMS, Mechanisms, build_mechanisms

__all__ = ["BalloonController", "CpuTuneController", "Decision", "KsmController", "MECHANISMS", "Mechanism",
           "MechanismContext", "Mechanisms", "build_mechanisms"]
