"""momctl's commands that talk to momd over D-Bus (see docs/dbus-api.md).

Each command checks its command line first (UsageError, before any
connection), then runs one ``asyncio.run`` with one bus connection.  Read
commands take ``--json``; mutating calls carry the allow-interactive-
authorization flag so that a polkit agent may ask for a password.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TextIO

from dbus_next import Variant

from ..contract import GUEST_INTERFACE, HOST_INTERFACE, HOST_PATH, MANAGER_INTERFACE, MANAGER_PATH
from ..fields import (BALLOON_TARGET, GUEST_BY_PROPERTY, GUEST_CATALOGUE, GUEST_CONTROL_FIELDS,
                      GUEST_CPU_TUNE, MEMTUNE_LIMITS, VIRTIO_MEM,
                      GUEST_STATISTICS, HOST_BY_PROPERTY, HOST_KSM, KIB)
from . import exitcodes
from .bus_client import MomClient, guests_of, unwrap
from .iotune_format import disk_lines
from .formatting import (KSM_KEYS, cputune_setting, dump_json, field_text, format_duration_us,
                         format_kib, format_table, format_timestamp_us, format_value,
                         ksm_setting, param_variant, parse_assignment, parse_size)
from .policy_tools import UsageError

# -- what the properties mean: the field catalogue -------------------------------

#: Guest properties in the order ``momctl guest`` shows them.
GUEST_ORDER = tuple(f.prop for f in GUEST_CATALOGUE if f.prop)
#: Guest statistics and controls (policy names) that are KiB.
GUEST_STAT_KIB = frozenset(f.name for f in GUEST_STATISTICS + GUEST_CONTROL_FIELDS
                           if f.unit is KIB)
KSM_PROPERTIES = tuple(f.prop for f in HOST_KSM if f.prop)
_KSM_RUN = HOST_BY_PROPERTY["KsmRun"]

Run = Callable[[argparse.Namespace, TextIO, TextIO], int]
Body = Callable[[MomClient], Awaitable[int | None]]


def run_with_client(args: argparse.Namespace, body: Body) -> int:
    """Connect (``--address`` or the system bus), run ``body``, disconnect."""
    async def main() -> int:
        client = await MomClient.connect(getattr(args, "address", None))
        try:
            code = await body(client)
        finally:
            client.close()
        return exitcodes.OK if code is None else code
    return asyncio.run(main())


def _emit_json(out: TextIO, value: Any) -> None:
    print(dump_json(value), file=out)


# -- status ----------------------------------------------------------------------

def ksm_summary(host: dict[str, Any]) -> list[str]:
    """Two lines about KSM from the Host properties (empty without them)."""
    if "KsmRun" not in host:
        return []
    run = host.get("KsmRun", 0)
    state = _KSM_RUN.state(run) or f"run={run}"
    first = (f"{state} (run={run}), {host.get('KsmPagesToScan', 0)} pages per scan every "
             f"{host.get('KsmSleepMillisecs', 0)} ms, merge across nodes "
             f"{host.get('KsmMergeAcrossNodes', 0)}")
    second = (f"pages shared {host.get('KsmPagesShared', 0)}, sharing "
              f"{host.get('KsmPagesSharing', 0)}, unshared {host.get('KsmPagesUnshared', 0)}, "
              f"volatile {host.get('KsmPagesVolatile', 0)}; {host.get('KsmFullScans', 0)} full "
              f"scans; shareable {format_kib(host.get('KsmShareable'))}; ksmd "
              f"{host.get('KsmdCpuUsage', 0.0):.1f} % CPU")
    return [first, second]


def evaluation_summary(manager: dict[str, Any], now: float | None = None) -> str:
    last = manager.get("LastEvaluation", 0)
    if not last:
        text = "none yet"
    else:
        text = (f"{format_timestamp_us(last, now)}, took "
                f"{format_duration_us(manager.get('LastEvaluationDuration'))}")
    error = manager.get("LastPolicyError", "")
    return f"{text}, FAILED: {error}" if error else (f"{text}, OK" if last else text)


def status_lines(manager: dict[str, Any], host: dict[str, Any],
                 now: float | None = None) -> list[str]:
    """The ``momctl status`` screen, from the Manager and Host properties."""
    def row(label: str, text: str) -> str:
        return f"{label:<12} {text}"

    controllers = ", ".join(manager.get("Controllers", [])) or "none"
    head = (f"momd {manager.get('Version', '?')}: {manager.get('GuestCount', 0)} guests, "
            f"controllers {controllers}")
    if manager.get("DryRun"):
        head += " (dry run: decisions are not applied)"
    connected = "connected" if manager.get("Connected") else "NOT CONNECTED"
    lines = [head,
             row("Hypervisor", f"{manager.get('HypervisorURI', '?')} ({connected})"),
             row("Policies", ", ".join(manager.get("PolicyNames", [])) or "none"),
             row("Evaluation", evaluation_summary(manager, now))]
    if host:
        lines.append(row("Memory", (
            f"total {format_kib(host.get('MemTotal'))}, free {format_kib(host.get('MemFree'))}"
            f", unused {format_kib(host.get('MemUnused'))}, anon "
            f"{format_kib(host.get('AnonPages'))}; {host.get('CpuCount', '?')} CPUs")))
        lines.append(row("Swap", (
            f"used {format_kib(host.get('SwapUsed'))} of {format_kib(host.get('SwapTotal'))}"
            f", in {host.get('SwapIn', 0)} / out {host.get('SwapOut', 0)} pages")))
        if "MemoryPressureSome" in host:
            lines.append(row("Pressure", (
                f"some {host.get('MemoryPressureSome', 0.0):.2f} %, full "
                f"{host.get('MemoryPressureFull', 0.0):.2f} % (avg10)")))
        ksm = ksm_summary(host)
        if ksm:
            lines.append(row("KSM", ksm[0]))
            lines.append(row("", ksm[1]))
    return lines


async def fetch_manager_and_host(client: MomClient) -> tuple[dict[str, Any], dict[str, Any]]:
    manager = await client.get_all(MANAGER_PATH, MANAGER_INTERFACE)
    host = await client.get_all(HOST_PATH, HOST_INTERFACE)
    return manager, host


def run_status(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    async def body(client: MomClient) -> None:
        manager, host = await fetch_manager_and_host(client)
        if args.json:
            _emit_json(out, {"manager": manager, "host": host})
        else:
            print("\n".join(status_lines(manager, host)), file=out)
    return run_with_client(args, body)


# -- guests ----------------------------------------------------------------------

#: The columns of ``momctl guests``, by property; their headings are the catalogue's labels.
GUEST_COLUMNS = ("Name", "BalloonCurrent", "BalloonMaximum", "BalloonMinimum", "MemUnused",
                 "SwapIn", "BalloonTarget")
GUEST_HEADERS = tuple(GUEST_BY_PROPERTY[p].label for p in GUEST_COLUMNS)


def _guest_stat(props: dict[str, Any], prop: str, stat: str) -> Any:
    """A guest property, or None when the guest never reported the statistic."""
    value = props.get(prop)
    stats = props.get("Statistics")
    if isinstance(stats, dict) and stats and stat not in stats and not value:
        return None
    return value


def guest_row(props: dict[str, Any]) -> list[str]:
    """One line of ``momctl guests``."""
    swap_in = _guest_stat(props, "SwapIn", "swap_in")
    swap_out = _guest_stat(props, "SwapOut", "swap_out")
    swap = "-" if swap_in is None and swap_out is None else \
        f"{format_kib(swap_in)}/{format_kib(swap_out)}"
    target = props.get("BalloonTarget") or None
    return [str(props.get("Name", "?")), format_kib(props.get("BalloonCurrent")),
            format_kib(props.get("BalloonMaximum")), format_kib(props.get("BalloonMinimum")),
            format_kib(_guest_stat(props, "MemUnused", "mem_unused")), swap,
            format_kib(target)]


def sorted_guests(guests: dict[str, dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return sorted(guests.items(), key=lambda item: (str(item[1].get("Name", "")), item[0]))


def guest_table(guests: dict[str, dict[str, Any]]) -> list[str]:
    if not guests:
        return ["no guests"]
    rows = [guest_row(props) for _, props in sorted_guests(guests)]
    return format_table(GUEST_HEADERS, rows, right=(1, 2, 3, 4, 5, 6))


def run_guests(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    async def body(client: MomClient) -> None:
        guests = await client.guests()
        if args.json:
            _emit_json(out, [{"path": path, **props} for path, props in sorted_guests(guests)])
        else:
            print("\n".join(guest_table(guests)), file=out)
    return run_with_client(args, body)


def guest_detail_lines(path: str, props: dict[str, Any]) -> list[str]:
    """``momctl guest NAME``: every property, then statistics and controls."""
    lines = [f"{props.get('Name', '?')}  {path}"]
    names = [n for n in GUEST_ORDER if n in props and n != "Name"]
    names += sorted(n for n in props if n not in GUEST_ORDER
                    and n not in ("Statistics", "Controls"))
    width = max((len(n) for n in names), default=0)
    stats = props.get("Statistics")
    # Its properties read 0 on a guest without the device: say so instead.
    no_virtio_mem = isinstance(stats, dict) and "virtio_mem_max" not in stats
    for name in names:
        value = props[name]
        field = GUEST_BY_PROPERTY.get(name)
        if field is not None and field.signature == "aa{sv}":
            lines.append(f"  {name}:")   # a disk per line (IoTune, IoTuneCurrent)
            lines.extend(disk_lines(value))
            continue
        if no_virtio_mem and field in VIRTIO_MEM:
            text = "none (no virtio-mem device)"
        elif not value and field is BALLOON_TARGET:
            text = "none"
        elif not value and field in MEMTUNE_LIMITS:
            text = "unlimited"
        else:
            text = field_text(field, value)
        lines.append(f"  {name:<{width}}  {text}")
    for section in ("Statistics", "Controls"):
        values = props.get(section)
        if not isinstance(values, dict):
            continue
        lines.append(f"{section}:")
        if not values:
            lines.append("  none")
        lines.extend(_named_values(values))
    return lines


def _named_values(values: dict[str, Any]) -> list[str]:
    width = max((len(k) for k in values), default=0)
    lines = []
    for key in sorted(values):
        value = values[key]
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            lines.append(f"  {key}:")   # disks (io_tune): one per line
            lines.extend(disk_lines(value))
            continue
        text = format_value(value)
        if key in GUEST_STAT_KIB and isinstance(value, (int, float)) \
                and not isinstance(value, bool) and value:
            text += f" ({format_kib(value)})"
        lines.append(f"  {key:<{width}}  {text}")
    return lines


def run_guest(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    async def body(client: MomClient) -> None:
        path, props = await client.find_guest(args.guest)
        # Fresh values straight from the object (GetManagedObjects is one
        # snapshot of everything; GetAll is this guest's newest state).
        props = await client.get_all(path, GUEST_INTERFACE)
        if args.json:
            _emit_json(out, {"path": path, **props})
        else:
            print("\n".join(guest_detail_lines(path, props)), file=out)
    return run_with_client(args, body)


# -- policies ----------------------------------------------------------------------

def run_policy_list(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    async def body(client: MomClient) -> None:
        (policies,) = await client.call(MANAGER_PATH, MANAGER_INTERFACE, "GetPolicies")
        active = await client.get(MANAGER_PATH, MANAGER_INTERFACE, "PolicyNames")
        order = list(active) + sorted(n for n in policies if n not in active)
        if args.json:
            _emit_json(out, {"active": active, "policies": {n: policies.get(n, "")
                                                             for n in order}})
            return
        if not order:
            print("no policies", file=out)
        for name in order:
            text = policies.get(name)
            lines = "" if text is None else f"  ({len(text.splitlines())} lines)"
            print(f"{name}{lines}", file=out)
    return run_with_client(args, body)


def run_policy_show(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    async def body(client: MomClient) -> None:
        (text,) = await client.call(MANAGER_PATH, MANAGER_INTERFACE, "GetPolicy", "s", [args.name])
        if args.json:
            _emit_json(out, {"name": args.name, "text": text})
        else:
            out.write(text if text.endswith("\n") or not text else text + "\n")
    return run_with_client(args, body)


def _read_text(source: str) -> str:
    if source == "-":
        try:
            return sys.stdin.read()
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"cannot read the policy from stdin: {e}") from None
    try:
        return Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read {source}: {e}") from None


def run_policy_set(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    text = _read_text(args.file)

    async def body(client: MomClient) -> None:
        await client.call(MANAGER_PATH, MANAGER_INTERFACE, "SetPolicy", "ss", [args.name, text],
                          interactive=True)
        print(f"policy {args.name} set", file=out)
    return run_with_client(args, body)


def _simple_call(member: str, signature: str, body_args: list[Any], message: str) -> Run:
    def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
        values = [getattr(args, a) for a in body_args]

        async def body(client: MomClient) -> None:
            await client.call(MANAGER_PATH, MANAGER_INTERFACE, member, signature, values,
                              interactive=True)
            print(message.format(**vars(args)), file=out)
        return run_with_client(args, body)
    return run


run_policy_delete = _simple_call("DeletePolicy", "s", ["name"], "policy {name} deleted")
run_policy_reload = _simple_call("ReloadPolicies", "", [], "policies reloaded from disk")
run_policy_reset = _simple_call("ResetPolicies", "", [],
                                "policies reset to the files on disk")


# -- parameters ----------------------------------------------------------------------

def parse_params(assignments: list[str]) -> dict[str, Variant]:
    params: dict[str, Variant] = {}
    for text in assignments:
        name, raw = parse_assignment(text)
        params[name] = param_variant(raw)
    return params


def run_params(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    params = parse_params(args.assignments) if args.params_command == "set" else None

    async def body(client: MomClient) -> None:
        if params is not None:
            await client.call(MANAGER_PATH, MANAGER_INTERFACE, "SetParameters", "a{sv}", [params],
                              interactive=True)
            print(f"parameters set: {', '.join(params)}", file=out)
            return
        current = await client.get(MANAGER_PATH, MANAGER_INTERFACE, "Parameters")
        if args.json:
            _emit_json(out, current)
        elif not current:
            print("no parameters set", file=out)
        else:
            width = max(len(k) for k in current)
            for key in sorted(current):
                print(f"{key:<{width}} = {format_value(current[key])}", file=out)
    return run_with_client(args, body)


# -- KSM ------------------------------------------------------------------------

def ksm_lines(host: dict[str, Any]) -> list[str]:
    values = [(name, host[name]) for name in KSM_PROPERTIES if name in host]
    if not values:
        return ["no KSM statistics (is the KSM collector enabled?)"]
    width = max(len(n) for n, _ in values)
    lines = []
    for name, value in values:
        lines.append(f"{name:<{width}}  {field_text(HOST_BY_PROPERTY[name], value)}")
    return lines


def run_ksm(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    settings = dict(ksm_setting(s) for s in args.assignments) \
        if args.ksm_command == "set" else None

    async def body(client: MomClient) -> None:
        if settings is not None:
            await client.call(HOST_PATH, HOST_INTERFACE, "SetKsm", "a{sv}", [settings],
                              interactive=True)
            print("KSM set: " + ", ".join(f"{k}={v.value}" for k, v in settings.items()),
                  file=out)
            return
        host = await client.get_all(HOST_PATH, HOST_INTERFACE)
        if args.json:
            _emit_json(out, {n: host[n] for n in KSM_PROPERTIES if n in host})
        else:
            print("\n".join(ksm_lines(host)), file=out)
    return run_with_client(args, body)


# -- balloon -----------------------------------------------------------------------

def run_balloon(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    kib = parse_size(args.size)

    async def body(client: MomClient) -> None:
        path, props = await client.find_guest(args.guest)
        await client.call(path, GUEST_INTERFACE, "SetBalloonTarget", "t", [kib], interactive=True)
        print(f"{props.get('Name', path)}: balloon target set to {format_kib(kib)} "
              f"({kib} KiB)", file=out)
    return run_with_client(args, body)


# -- CPU tuning --------------------------------------------------------------------

#: ``momctl cputune NAME``: the guest's CPU tuning properties.
CPU_TUNE_PROPERTIES = tuple(f.prop for f in GUEST_CPU_TUNE if f.prop)


def cputune_lines(name: str, props: dict[str, Any]) -> list[str]:
    values = [(p, props[p]) for p in CPU_TUNE_PROPERTIES if p in props]
    if not any(props.get(p) for p in ("VcpuPeriod", "VcpuCount")):
        return [f"{name}: no CPU tuning figures (is the GuestCpuTune collector enabled?)"]
    width = max(len(p) for p, _ in values)
    return [f"{name}:"] + [f"  {p:<{width}}  {field_text(GUEST_BY_PROPERTY[p], v)}"
                           for p, v in values]


def run_cputune(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    settings = dict(cputune_setting(s) for s in args.assignments)

    async def body(client: MomClient) -> None:
        path, props = await client.find_guest(args.guest)
        name = props.get("Name", path)
        if settings:
            await client.call(path, GUEST_INTERFACE, "SetCpuTune", "a{sv}", [settings],
                              interactive=True)
            print(f"{name}: CPU tuning set: "
                  + ", ".join(f"{k}={v.value}" for k, v in settings.items()), file=out)
            return
        props = await client.get_all(path, GUEST_INTERFACE)
        if args.json:
            _emit_json(out, {p: props[p] for p in CPU_TUNE_PROPERTIES if p in props})
        else:
            print("\n".join(cputune_lines(name, props)), file=out)
    return run_with_client(args, body)


# -- evaluate ----------------------------------------------------------------------

def object_names(objects: dict[str, dict[str, dict[str, Any]]]) -> dict[str, str]:
    """A readable name for each object path: ``host``, ``manager``, guest names."""
    names = {HOST_PATH: "host", MANAGER_PATH: "manager"}
    for path, props in guests_of(objects).items():
        names[path] = str(props.get("Name") or path)
    return names


def controls_lines(controls: dict[str, dict[str, Any]], names: dict[str, str]) -> list[str]:
    """``momctl evaluate``: the controls per object, host first, then by name."""
    if not controls:
        return ["no controls"]

    def key(path: str) -> tuple[int, str]:
        return (0 if path == HOST_PATH else 1, names.get(path, path))
    lines = []
    for path in sorted(controls, key=key):
        lines.append(f"{names.get(path, path)}:")
        values = controls[path]
        lines.extend(_named_values(values) if values else ["  none"])
    return lines


def run_evaluate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    async def body(client: MomClient) -> None:
        (raw,) = await client.call(MANAGER_PATH, MANAGER_INTERFACE, "EvaluateNow", "b",
                                   [bool(args.dry_run)], interactive=True)
        controls = unwrap(raw)
        names = object_names(await client.managed_objects())
        if args.json:
            _emit_json(out, {"dry_run": bool(args.dry_run), "objects": [
                {"path": p, "name": names.get(p, p), "controls": c}
                for p, c in sorted(controls.items())]})
            return
        print("dry run: nothing applied" if args.dry_run else "evaluated and applied",
              file=out)
        print("\n".join(controls_lines(controls, names)), file=out)
    return run_with_client(args, body)


# -- the parsers -------------------------------------------------------------------

def bus_options() -> argparse.ArgumentParser:
    """``--address``, accepted before or after the command name."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--address", default=argparse.SUPPRESS, metavar="ADDRESS",
                        help="D-Bus address of the bus to use (default: the system bus, "
                             "or $DBUS_SYSTEM_BUS_ADDRESS)")
    return parent


def json_option() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--json", action="store_true", help="machine-readable output")
    return parent


def add_bus_commands(commands: argparse._SubParsersAction) -> None:
    """status, guests, guest, params, ksm, balloon, cputune, evaluate (``monitor`` has its
    own module)."""
    bus, js = bus_options(), json_option()
    p = commands.add_parser("status", parents=[bus, js], help="service, hypervisor, policies, "
                            "last evaluation, host memory and KSM")
    p.set_defaults(run=run_status)

    p = commands.add_parser("guests", parents=[bus, js], help="the managed guests as a table")
    p.set_defaults(run=run_guests)

    p = commands.add_parser("guest", parents=[bus, js],
                            help="one guest's properties and statistics")
    p.add_argument("guest", metavar="NAME|UUID")
    p.set_defaults(run=run_guest)

    p = commands.add_parser("params", parents=[bus, js],
                            help="show the policy parameters, or set some")
    sub = p.add_subparsers(dest="params_command", metavar="set")
    s = sub.add_parser("set", parents=[bus], help="merge parameters (VALUE is JSON when it "
                       "parses, else a string)")
    s.add_argument("assignments", nargs="+", metavar="NAME=VALUE")
    p.set_defaults(run=run_params, assignments=[])

    p = commands.add_parser("ksm", parents=[bus, js],
                            help="show KSM statistics and tunables, or set tunables")
    sub = p.add_subparsers(dest="ksm_command", metavar="set")
    s = sub.add_parser("set", parents=[bus], help="set KSM tunables: "
                       + ", ".join(f"{k}=N" for k in KSM_KEYS))
    s.add_argument("assignments", nargs="+", metavar="KEY=VALUE")
    p.set_defaults(run=run_ksm, assignments=[])

    p = commands.add_parser("balloon", parents=[bus], help="set a guest's balloon target")
    p.add_argument("guest", metavar="NAME|UUID")
    p.add_argument("size", metavar="SIZE", help="KiB, or with a unit: 512M, 2G, 1.5GiB, "
                   "1048576K (binary units)")
    p.set_defaults(run=run_balloon)

    p = commands.add_parser("cputune", parents=[bus, js],
                            help="show a guest's vCPU quota and period, or set them")
    p.add_argument("guest", metavar="NAME|UUID")
    p.add_argument("assignments", nargs="*", metavar="quota=US|period=US",
                   help="microseconds: quota -1 (unlimited) or 1000..17592186044415, "
                        "period 1000..1000000")
    p.set_defaults(run=run_cputune)

    p = commands.add_parser("evaluate", parents=[bus, js],
                            help="collect, evaluate and apply now; print the controls")
    p.add_argument("--dry-run", action="store_true",
                   help="compute the controls without applying them")
    p.set_defaults(run=run_evaluate)


def add_policy_bus_commands(policy: argparse._SubParsersAction) -> None:
    """list, show, set, delete, reload, reset under ``momctl policy``."""
    bus, js = bus_options(), json_option()
    p = policy.add_parser("list", parents=[bus, js], help="the service's policies")
    p.set_defaults(run=run_policy_list)
    p = policy.add_parser("show", parents=[bus, js], help="print one policy's text")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(run=run_policy_show)
    p = policy.add_parser("set", parents=[bus], help="add or replace a policy (checked "
                          "by the service first; kept across restarts)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("file", metavar="FILE|-")
    p.set_defaults(run=run_policy_set)
    p = policy.add_parser("delete", parents=[bus], help="delete a policy")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(run=run_policy_delete)
    p = policy.add_parser("reload", parents=[bus], help="re-read the policy files from disk")
    p.set_defaults(run=run_policy_reload)
    p = policy.add_parser("reset", parents=[bus],
                          help="drop every policy set over the bus, back to the files")
    p.set_defaults(run=run_policy_reset)

