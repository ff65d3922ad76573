"""mom: a memory overcommitment manager for KVM hosts.

Data flows collect -> decide -> act: collectors sample the host and the
guests, the policy engine (``momservice.policy``) decides, controllers apply
the decisions.  The D-Bus service is a window onto that core.
"""

__version__ = "0.1.0"
