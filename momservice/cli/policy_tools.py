"""``momctl policy check|eval|test``: policy tools that need no bus and no hypervisor."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, TextIO

from ..fields import GUEST_FIELDS, GUEST_PROPERTIES
from ..policy.iotune_value import from_plain
from ..policy import Entity, PolicyError, PolicySet, compile_policy
from ..policy_files import find_policy_files, read_policy_texts
from . import exitcodes


class UsageError(Exception):
    """Bad input from the command line; the message is shown as it is."""


def add_policy_tool_parsers(policy: argparse._SubParsersAction) -> None:
    """Register check, eval and test under ``momctl policy``."""
    check = policy.add_parser("check", help="check policy files (or directories) as one set")
    check.add_argument("files", nargs="+", type=Path, metavar="FILE")
    check.set_defaults(run=run_check)

    ev = policy.add_parser("eval", help="evaluate a policy text and print each top-level value")
    ev.add_argument("file", nargs="?", default="-", metavar="FILE|-")
    ev.set_defaults(run=run_eval)

    test = policy.add_parser(
        "test", help="evaluate a policy set once over given host and guest samples")
    test.add_argument("--host", default="{}", metavar="JSON",
                      help="host statistics as a JSON object (or @FILE)")
    test.add_argument("--guest", action="append", default=[], metavar="JSON",
                      help="one guest as a JSON object (or @FILE); name, uuid and pid "
                           "are properties, every other key a statistic; repeatable")
    test.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                      help="a policy parameter; VALUE is JSON when it parses, else a string")
    test.add_argument("files", nargs="+", type=Path, metavar="FILE")
    test.set_defaults(run=run_test)


def location(error: PolicyError, files: dict[str, str]) -> str:
    """``FILE:LINE: message`` for an error of the named policy."""
    where = files.get(error.policy or "", error.policy or "<policy>")
    if error.line is not None:
        where = f"{where}:{error.line}"
    return f"{where}: {error.message}"


def _load(paths: list[Path]) -> tuple[dict[str, str], dict[str, str]]:
    """Texts and file names by policy name; UsageError for unreadable files."""
    try:
        files = find_policy_files(paths)
        return read_policy_texts(files), {n: str(p) for n, p in files.items()}
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(str(e)) from None


def run_check(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    texts, files = _load(args.files)
    failed = 0
    for name, text in texts.items():
        warnings: list[PolicyError] = []
        try:
            compile_policy(text, name, warnings)
        except PolicyError as e:
            print(location(e, files), file=err)
            failed += 1
        for warning in warnings:
            # An error only if evaluated: MoM loads such a policy, and so do we.
            print(f"{location(warning, files)} (warning: fails only when evaluated)",
                  file=err)
    if failed:
        return exitcodes.POLICY_ERROR
    print(f"{len(texts)} policies OK: {', '.join(sorted(texts))}", file=out)
    return exitcodes.OK


def run_eval(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.file == "-":
        source, text = "<stdin>", sys.stdin.read()
    else:
        source = args.file
        try:
            text = Path(source).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(str(e)) from None
    try:
        policies = PolicySet({"eval": text})
    except PolicyError as e:
        print(location(e, {"eval": source}), file=err)
        return exitcodes.POLICY_ERROR
    result = policies.evaluate(Entity.host(), [])
    for value in result.values:
        print(json.dumps(to_json(value)), file=out)
    _print_messages(result.messages, err)
    if result.error is not None:
        print(location(result.error, {"eval": source}), file=err)
        return exitcodes.POLICY_ERROR
    return exitcodes.OK


def run_test(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    texts, files = _load(args.files)
    params = dict(_parse_param(p) for p in args.param)
    host = Entity.host()
    host.add_sample(_json_object(args.host, "--host"))
    guests = [_guest(i, g) for i, g in enumerate(args.guest)]
    try:
        policies = PolicySet(texts)
    except PolicyError as e:
        print(location(e, files), file=err)
        return exitcodes.POLICY_ERROR
    result = policies.evaluate(host, guests, params)
    _print_messages(result.messages, err)
    if result.error is not None:
        print(location(result.error, files), file=err)
        return exitcodes.POLICY_ERROR
    rows = []
    for guest in guests:
        if guest in result.guest_errors:
            rows.append({"error": location(result.guest_errors[guest], files)})
        else:
            rows.append(to_json(result.guest_controls.get(guest, {})))
    print(json.dumps({"host": to_json(result.host_controls), "guests": rows}), file=out)
    return exitcodes.OK


def _guest(index: int, text: str) -> Entity:
    data = _json_object(text, "--guest")
    props = {k: data.pop(k) for k in GUEST_PROPERTIES if k in data}
    props.setdefault("name", f"guest{index}")
    # Every key given counts as present: no required field can be missing,
    # and a standard field left out reads as nil.
    guest = Entity("guest", props, optional=GUEST_FIELDS)
    try:
        # A guest's disks as momctl guest --json shows them: records again.
        data = {k: from_plain(k, v) for k, v in data.items()}
    except (ValueError, TypeError) as e:
        raise UsageError(f"--guest: {e}") from None
    guest.add_sample(data)
    return guest


def _json_object(text: str, option: str) -> dict[str, Any]:
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text(encoding="utf-8")
        except OSError as e:
            raise UsageError(f"{option}: {e}") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"{option}: not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise UsageError(f"{option}: expected a JSON object, got {text!r}")
    return value


def _parse_param(text: str) -> tuple[str, Any]:
    name, sep, raw = text.partition("=")
    if not sep or not name:
        raise UsageError(f"--param {text!r}: expected NAME=VALUE")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    if isinstance(value, dict):
        raise UsageError(f"--param {name}: a parameter cannot be a JSON object")
    return name, value


def _print_messages(messages: list[str], err: TextIO) -> None:
    for message in messages:
        print(f"debug: {message}", file=err)


def to_json(value: Any) -> Any:
    """A policy value as plain JSON data (entities and functions as strings)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    return repr(value)
