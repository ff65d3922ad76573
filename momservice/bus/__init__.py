"""The D-Bus window onto momd: org.ovirt.mom1 (see dbus-api.md).

Thin by design: every method calls the core ``Service``; every property
reads the engine's state.  ``access`` makes authorization structural,
``errors`` maps the core's exceptions to the contract's error names, and
``connection`` fixes what dbus-next gets wrong for a system service.
"""
