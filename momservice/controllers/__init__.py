"""Controllers: the only parts of mom that change anything.

``BalloonController`` resizes guest balloons through the hypervisor
interface; ``KsmController`` writes the KSM settings in sysfs.  Both can
run in dry-run mode, deciding and logging without writing.
"""

from .balloon import BalloonController
from .ksm import KsmController

__all__ = ["BalloonController", "KsmController"]
