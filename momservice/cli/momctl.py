"""momctl: the administrator's tool for mom."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .. import __version__
from . import exitcodes
from .bus_client import MomctlError
from .bus_commands import add_bus_commands, add_policy_bus_commands, bus_options
from .explain_commands import add_explain_commands
from .lab_command import add_lab_parser
from .monitor import add_monitor_command
from .policy_tools import UsageError, add_policy_tool_parsers


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of momctl, with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="momctl", description="Inspect and steer mom, the memory overcommitment manager.",
        epilog=exitcodes.EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[bus_options()])
    parser.add_argument("--version", action="version", version=f"momctl {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_bus_commands(commands)
    add_monitor_command(commands)
    add_explain_commands(commands)
    add_lab_parser(commands)
    policy = commands.add_parser("policy", help="work with policies")
    policy_commands = policy.add_subparsers(dest="policy_command", required=True,
                                            metavar="SUBCOMMAND")
    add_policy_tool_parsers(policy_commands)
    add_policy_bus_commands(policy_commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run momctl; returns the exit code (see ``exitcodes``)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: --help, --version or a usage error
        return int(e.code or 0) if isinstance(e.code, int) else exitcodes.INVALID_ARGUMENT
    try:
        return args.run(args, sys.stdout, sys.stderr)
    except UsageError as e:
        print(f"momctl: {e}", file=sys.stderr)
        return exitcodes.INVALID_ARGUMENT
    except MomctlError as e:
        print(f"momctl: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        print("momctl: interrupted", file=sys.stderr)
        return exitcodes.INTERRUPTED
    except BrokenPipeError:
        # `momctl guests | head`: the reader is gone; nothing more to say.
        sys.stderr.close()
        return exitcodes.OK


if __name__ == "__main__":
    sys.exit(main())
