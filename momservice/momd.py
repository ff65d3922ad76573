"""momd: the memory overcommitment manager daemon."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

# Nothing that imports asyncio up here: main() first keeps TLS out.
if TYPE_CHECKING:
    from .config import Config

log = logging.getLogger("momservice")


def leave_out_tls() -> None:
    """Make ``import ssl`` fail in this process, unless it is loaded already.

    momd talks to D-Bus, libvirt and polkit over Unix sockets (a remote
    libvirt's TLS is libvirt's own); asyncio imports ssl only in case a
    program wants TLS, and doing without it is supported.  Loading it cost
    momd 1.2 MB resident: the module, libssl and OpenSSL's set-up.
    """
    sys.modules.setdefault("ssl", None)  # type: ignore[arg-type]


def setup_logging(config: Config) -> None:
    """Log to the journal under systemd, else to stderr or the configured file."""
    root = logging.getLogger()
    root.setLevel(config.verbosity)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler: logging.Handler
    if config.log != "stdio":
        # Only here: logging.handlers brings pickle and queue along (0.2 MB).
        from logging.handlers import RotatingFileHandler
        handler = RotatingFileHandler(
            config.log, maxBytes=config.max_bytes, backupCount=config.backup_count)
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    elif os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"):
        try:
            from systemd.journal import JournalHandler
            handler = JournalHandler(SYSLOG_IDENTIFIER="momd")
        except ImportError:
            handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)


def main(argv: Sequence[str] | None = None, **parts: Any) -> int:
    """Run momd until SIGTERM/SIGINT; returns the exit code.

    ``parts`` go to :func:`momservice.assembly.build_service` (a test's
    host tree, no pressure trigger, ...).
    """
    leave_out_tls()
    import asyncio

    from .config import ConfigError, command_line_help, config_from_args, parse_command_line
    try:
        args = parse_command_line(sys.argv[1:] if argv is None else argv)
        if args.help:
            print(command_line_help(), end="")
            return 0
        config = config_from_args(args)
    except ConfigError as e:
        print(f"momd: {e}", file=sys.stderr)
        return 2
    try:
        setup_logging(config)
    except OSError as e:
        print(f"momd: cannot open log {config.log}: {e}", file=sys.stderr)
        return 2
    from .assembly import attach_bus, build_service
    from .bus.server import BusNameTaken
    try:
        service = build_service(config, **parts)
    except ValueError as e:  # a bad sim:// URI or scenario file
        print(f"momd: {e}", file=sys.stderr)
        return 2
    attach_bus(service)
    try:
        asyncio.run(service.run())
    except KeyboardInterrupt:
        pass
    except BusNameTaken as e:
        log.error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
