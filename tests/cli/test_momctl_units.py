"""momctl's pure parts: sizes, parameter typing, formatting, exit codes.

No bus here: the functions are called directly, the parser and main() are
run in-process for command-line errors that must be caught before any
connection is attempted.
"""

from __future__ import annotations

import re
import time

import pytest
from dbus_next import Message, MessageType, Variant

from momservice import contract
from momservice.cli import exitcodes
from momservice.cli.bus_client import MomctlError, describe_dbus_error, find_guest, unwrap
from momservice.cli.bus_commands import (controls_lines, evaluation_summary, guest_detail_lines,
                                         guest_row, guest_table, ksm_lines, object_names,
                                         parse_params, status_lines)
from momservice.cli.bus_commands import cputune_lines
from momservice.cli.formatting import cputune_setting, field_text
from momservice.fields import GUEST_BY_PROPERTY
from momservice.cli.formatting import (format_age, format_duration_us, format_kib,
                                       format_table, format_timestamp_us, format_value,
                                       kib_text, ksm_setting, param_variant, parse_size,
                                       to_json)
from momservice.contract import (GUEST_INTERFACE, HOST_INTERFACE, HOST_PATH, MANAGER_INTERFACE,
                                 MANAGER_PATH, guest_path)
from momservice.cli.momctl import build_parser, main
from momservice.cli.monitor import MonitorState
from momservice.cli.policy_tools import UsageError

GiB = 1024 * 1024

# -- sizes --------------------------------------------------------------------------


@pytest.mark.parametrize("text, kib", [
    ("0", 0),
    ("1048576", 1048576),
    ("  2048 ", 2048),
    ("1048576K", 1048576),
    ("1048576k", 1048576),
    ("1048576KB", 1048576),
    ("1048576KiB", 1048576),
    ("1048576kib", 1048576),
    ("512M", 512 * 1024),
    ("512m", 512 * 1024),
    ("512MB", 512 * 1024),
    ("512MiB", 512 * 1024),
    ("512mIb", 512 * 1024),
    ("2G", 2 * GiB),
    ("2g", 2 * GiB),
    ("2GB", 2 * GiB),
    ("2GiB", 2 * GiB),
    ("2 GiB", 2 * GiB),
    ("1.5GiB", 1536 * 1024),
    ("1.5G", 1536 * 1024),
    (".5G", 512 * 1024),
    ("1.G", GiB),
    ("1T", 1024 * GiB),
    ("1TB", 1024 * GiB),
    ("1TiB", 1024 * GiB),
    ("0.25tib", 256 * GiB),
    ("1.3M", 1331),        # 1331.2 KiB: rounded to the nearest KiB
    ("1.5", 2),            # 1.5 KiB rounds half up
    ("0.4K", 0),
])
def test_parse_size(text, kib):
    assert parse_size(text) == kib


@pytest.mark.parametrize("text", [
    "", " ", "G", "abc", "12X", "12 X", "12KK", "12Ki", "12iB", "12B", "-1", "-1G", "+1G",
    "1e3", "1,5G", "1.5.5G", "0x10", "nan", "inf", "1G2", "12 G B", "١٢",  # Arabic digits
    "99999999999999999999999T",
])
def test_parse_size_rejects(text):
    with pytest.raises(UsageError, match="size"):
        parse_size(text)


def test_balloon_bad_size_is_invalid_argument_before_connecting(capsys):
    # The bus address does not exist: only the size check can answer.
    code = main(["--address", "unix:path=/nonexistent/bus", "balloon", "guest-0001", "2X"])
    out, err = capsys.readouterr()
    assert code == exitcodes.INVALID_ARGUMENT
    assert "invalid size '2X'" in err
    assert "Traceback" not in err


# -- parameter and KSM values ----------------------------------------------------------


@pytest.mark.parametrize("raw, signature, value", [
    ("true", "b", True),
    ("false", "b", False),
    ("42", "x", 42),
    ("-7", "x", -7),
    ("9223372036854775807", "x", 2**63 - 1),
    ("0.15", "d", 0.15),
    ("1e3", "d", 1000.0),
    ("-2.5", "d", -2.5),
    ('"true"', "s", "true"),
    ('"42"', "s", "42"),
    ("hello", "s", "hello"),
    ("", "s", ""),
    ("True", "s", "True"),       # not JSON: a string
    ("1.2.3", "s", "1.2.3"),
    ("a=b", "s", "a=b"),
])
def test_param_variant(raw, signature, value):
    variant = param_variant(raw)
    assert isinstance(variant, Variant)
    assert variant.signature == signature
    assert variant.value == value
    assert type(variant.value) is type(value)


@pytest.mark.parametrize("raw", ["null", "[1, 2]", "{\"a\": 1}", "9223372036854775808",
                                 "-9223372036854775809", "1e999"])
def test_param_variant_rejects(raw):
    with pytest.raises(UsageError):
        param_variant(raw)


def test_parse_params_splits_at_the_first_equals_sign():
    params = parse_params(["low=0.2", "expr=a=b", " name =x"])
    assert {k: (v.signature, v.value) for k, v in params.items()} == {
        "low": ("d", 0.2), "expr": ("s", "a=b"), "name": ("s", "x")}


@pytest.mark.parametrize("text", ["novalue", "=3", ""])
def test_parse_params_rejects(text):
    with pytest.raises(UsageError, match="NAME=VALUE"):
        parse_params([text])


@pytest.mark.parametrize("text, key, value", [
    ("run=1", "run", 1),
    ("pages_to_scan=100", "pages_to_scan", 100),
    ("pages-to-scan=100", "pages_to_scan", 100),
    ("sleep_millisecs=20", "sleep_millisecs", 20),
    ("merge_across_nodes=0", "merge_across_nodes", 0),
    ("run=4294967295", "run", 2**32 - 1),
])
def test_ksm_setting(text, key, value):
    name, variant = ksm_setting(text)
    assert (name, variant.signature, variant.value) == (key, "u", value)


@pytest.mark.parametrize("text, match", [
    ("speed=1", "unknown KSM setting"),
    ("run=-1", "non-negative integer"),
    ("run=1.5", "non-negative integer"),
    ("run=yes", "non-negative integer"),
    ("run=", "non-negative integer"),
    ("run=4294967296", "too large"),
    ("run", "NAME=VALUE"),
])
def test_ksm_setting_rejects(text, match):
    with pytest.raises(UsageError, match=match):
        ksm_setting(text)


@pytest.mark.parametrize("argv", [
    ["params", "set", "x"],
    ["params", "set", "x=null"],
    ["ksm", "set", "bogus=1"],
    ["ksm", "set", "run=-1"],
    ["policy", "set", "p", "/nonexistent/file.policy"],
    ["monitor", "--seconds", "-1"],
    ["guest"],                      # argparse: missing NAME
    ["params", "set"],              # argparse: nothing to set
    ["nosuchcommand"],
])
def test_bad_command_lines_are_invalid_argument(argv, capsys):
    code = main(["--address", "unix:path=/nonexistent/bus", *argv])
    _, err = capsys.readouterr()
    assert code == exitcodes.INVALID_ARGUMENT
    assert "Traceback" not in err


# -- formatting --------------------------------------------------------------------------


@pytest.mark.parametrize("kib, text", [
    (None, "-"),
    (0, "0 KiB"),
    (512, "512 KiB"),
    (1023, "1023 KiB"),
    (1024, "1.0 MiB"),
    (1536, "1.5 MiB"),
    (GiB, "1.0 GiB"),
    (int(12.3 * GiB), "12.3 GiB"),
    (GiB - 1, "1.0 GiB"),          # 1023.999 MiB would read "1024.0 MiB"
    (1024 * GiB, "1.0 TiB"),
    (-2048, "-2.0 MiB"),
    (100.5, "100.5 KiB"),
])
def test_format_kib(kib, text):
    assert format_kib(kib) == text


@pytest.mark.parametrize("us, text", [
    (None, "-"), (0, "0 us"), (850, "850 us"), (12_300, "12.3 ms"), (1_500_000, "1.50 s")])
def test_format_duration(us, text):
    assert format_duration_us(us) == text


@pytest.mark.parametrize("seconds, text", [
    (0.2, "0.2 s ago"), (42, "42 s ago"), (600, "10 min ago"), (3 * 3600, "3.0 h ago"),
    (-30, "in the future")])
def test_format_age(seconds, text):
    assert format_age(seconds) == text


def test_format_timestamp():
    assert format_timestamp_us(0) == "never"
    now = 1_700_000_000.0
    text = format_timestamp_us(int((now - 3) * 1_000_000), now)
    assert text.endswith("(3.0 s ago)")
    assert text.startswith(time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now - 3)))


def test_format_table_aligns_columns():
    lines = format_table(["NAME", "SIZE"], [["a", "1.0 GiB"], ["longer-name", "512 KiB"]],
                         right=(1,))
    assert lines == ["NAME            SIZE",
                     "a            1.0 GiB",
                     "longer-name  512 KiB"]


def test_format_value_and_json():
    assert format_value(True) == "true"
    assert format_value(0.5) == "0.5"
    assert format_value(1734082.0) == "1734082"          # a float KiB, not 1.73408e+06
    assert format_value(1651507.2000000002) == "1651507.2"
    assert format_value(1e-5) == "1e-05"
    assert format_value(float("inf")) == "inf"
    assert kib_text(0) == "0 KiB" and kib_text(512) == "512 KiB"
    assert kib_text(2048) == "2.0 MiB (2048 KiB)"
    assert format_value("x") == '"x"'
    assert format_value([1, "a"]) == '[1, "a"]'
    assert to_json({"a": Variant("d", float("nan")), "b": [Variant("t", 3)], "c": (1, 2.5)}) \
        == {"a": "nan", "b": [3], "c": [1, 2.5]}
    assert unwrap({"x": Variant("a{sv}", {"y": Variant("u", 1)})}) == {"x": {"y": 1}}


def _guest(name="guest-0001", uuid="6f1c0b8e-0000-4000-8000-000000000001", **extra):
    props = {"Name": name, "UUID": uuid, "Pid": 0, "BalloonCurrent": GiB,
             "BalloonMaximum": 2 * GiB, "BalloonMinimum": 256 * 1024, "MemAvailable": GiB,
             "MemUnused": 300 * 1024, "MemUsable": 0, "DiskCaches": 0, "SwapIn": 0,
             "SwapOut": 2048, "MajorFaults": 3, "MinorFaults": 40, "Rss": 0, "StatsAge": 1.25,
             "BalloonTarget": 0,
             "Statistics": {"balloon_cur": GiB, "mem_unused": 300 * 1024, "swap_in": 0,
                            "swap_out": 2048},
             "Controls": {}}
    props.update(extra)
    return props


def test_guest_row():
    assert guest_row(_guest()) == ["guest-0001", "1.0 GiB", "2.0 GiB", "256.0 MiB",
                                   "300.0 MiB", "0 KiB/2.0 MiB", "-"]
    row = guest_row(_guest(BalloonTarget=1536 * 1024))
    assert row[-1] == "1.5 GiB"


def test_guest_row_without_guest_statistics():
    props = _guest(MemUnused=0, SwapIn=0, SwapOut=0, Statistics={"balloon_cur": GiB})
    row = guest_row(props)
    assert row[4] == "-" and row[5] == "-"


def test_guest_table_sorted_by_name():
    guests = {guest_path("b"): _guest("zeta", "b"), guest_path("a"): _guest("alpha", "a")}
    lines = guest_table(guests)
    assert lines[0].split()[:3] == ["NAME", "CURRENT", "MAX"]
    assert [line.split()[0] for line in lines[1:]] == ["alpha", "zeta"]
    assert guest_table({}) == ["no guests"]


def test_guest_detail_lines():
    lines = guest_detail_lines(guest_path("u-1"), _guest(Controls={"balloon_target": GiB}))
    text = "\n".join(lines)
    assert lines[0] == f"guest-0001  {guest_path('u-1')}"
    assert "BalloonCurrent  1.0 GiB (1048576 KiB)" in text
    assert "BalloonTarget   none" in text
    assert "StatsAge        1.2 s" in text or "StatsAge        1.3 s" in text
    assert "Statistics:" in text and re.search(r"\n  swap_out +2048 \(2\.0 MiB\)\n", text)
    assert "Controls:" in text and "balloon_target  1048576 (1.0 GiB)" in text


def test_guest_detail_lines_show_memory_limits_and_unlimited():
    lines = guest_detail_lines(guest_path("u-1"), _guest(
        MemSoftLimit=0, MemHardLimit=768 * 1024, MemSwapHardLimit=0))
    text = "\n".join(lines)
    assert "  MemSoftLimit      unlimited\n" in text
    assert "  MemHardLimit      768.0 MiB (786432 KiB)\n" in text
    assert "  MemSwapHardLimit  unlimited\n" in text
    # Beside the QEMU's RSS, as the catalogue orders them.
    names = [line.split()[0] for line in lines[1:]]
    assert names.index("Rss") + 1 == names.index("MemSoftLimit")


def test_status_lines():
    manager = {"Version": "0.1.0", "HypervisorURI": "test:///default", "Connected": True,
               "Controllers": ["Balloon", "KSM"], "DryRun": False,
               "PolicyNames": ["00-defines", "02-balloon"], "Parameters": {},
               "LastEvaluation": int((1_700_000_000 - 2) * 1e6),
               "LastEvaluationDuration": 3400, "LastPolicyError": "", "GuestCount": 4,
               "Verbosity": "info"}
    host = {"MemTotal": 64 * GiB, "MemFree": int(40.1 * GiB), "MemUnused": 30 * GiB,
            "AnonPages": 10 * GiB, "SwapTotal": 8 * GiB, "SwapUsed": 0, "SwapIn": 0,
            "SwapOut": 5, "CpuCount": 8, "MemoryPressureSome": 0.5,
            "MemoryPressureFull": 0.0, "KsmRun": 1, "KsmPagesToScan": 100,
            "KsmSleepMillisecs": 20, "KsmMergeAcrossNodes": 1, "KsmPagesShared": 10,
            "KsmPagesSharing": 20, "KsmPagesUnshared": 30, "KsmPagesVolatile": 0,
            "KsmFullScans": 7, "KsmShareable": 2048, "KsmdCpuUsage": 1.5}
    text = "\n".join(status_lines(manager, host, now=1_700_000_000))
    assert "momd 0.1.0: 4 guests, controllers Balloon, KSM" in text
    assert "test:///default (connected)" in text
    assert "00-defines, 02-balloon" in text
    assert "(2.0 s ago), took 3.4 ms, OK" in text
    assert "total 64.0 GiB, free 40.1 GiB, unused 30.0 GiB" in text
    assert "out 5 pages" in text
    assert "some 0.50 %" in text
    assert "running (run=1), 100 pages per scan every 20 ms" in text
    assert "shareable 2.0 MiB" in text and "ksmd 1.5 % CPU" in text

    failed = dict(manager, LastPolicyError="02-balloon:3: oops", Connected=False, DryRun=True)
    text = "\n".join(status_lines(failed, {}, now=1_700_000_000))
    assert "FAILED: 02-balloon:3: oops" in text
    assert "NOT CONNECTED" in text and "dry run" in text
    assert "Memory" not in text
    assert evaluation_summary({"LastEvaluation": 0}) == "none yet"


def test_ksm_lines():
    lines = ksm_lines({"KsmRun": 2, "KsmShareable": 4096, "KsmdCpuUsage": 0.25})
    assert lines == ["KsmRun        2 (unmerging)", "KsmShareable  4.0 MiB (4096 KiB)",
                     "KsmdCpuUsage  0.2 %"]
    assert "no KSM" in ksm_lines({})[0]


def test_evaluate_output_names_objects():
    objects = {MANAGER_PATH: {}, HOST_PATH: {},
               guest_path("u-1"): {GUEST_INTERFACE: _guest("web", "u-1")}}
    names = object_names(objects)
    lines = controls_lines({guest_path("u-1"): {"balloon_target": GiB},
                            HOST_PATH: {"ksm_run": 1}}, names)
    assert lines == ["host:", "  ksm_run  1", "web:", "  balloon_target  1048576 (1.0 GiB)"]
    assert controls_lines({}, names) == ["no controls"]


def test_find_guest_by_name_uuid_or_path():
    uuid = "6F1C0B8E-0000-4000-8000-000000000001"
    guests = {guest_path(uuid.lower()): _guest("web", uuid.lower()),
              guest_path("other"): _guest("db", "other")}
    assert find_guest(guests, "web")[1]["Name"] == "web"
    assert find_guest(guests, uuid)[1]["Name"] == "web"
    assert find_guest(guests, guest_path(uuid.lower()))[1]["Name"] == "web"
    with pytest.raises(MomctlError) as info:
        find_guest(guests, "nope")
    assert info.value.code == exitcodes.NOT_FOUND


# -- monitor state ---------------------------------------------------------------------


def test_monitor_state_follows_signals():
    state = MonitorState()
    state.load({"Version": "1", "GuestCount": 1}, {"MemTotal": GiB},
               {HOST_PATH: {}, guest_path("a"): {GUEST_INTERFACE: _guest("alpha", "a")}})
    assert state.properties_changed(guest_path("a"), GUEST_INTERFACE,
                                    {"BalloonCurrent": Variant("t", 512 * 1024)}, [])
    assert state.guests[guest_path("a")]["BalloonCurrent"] == 512 * 1024
    assert state.properties_changed(HOST_PATH, HOST_INTERFACE,
                                    {"MemFree": Variant("t", 5)}, [])
    assert state.host["MemFree"] == 5
    # Unknown object, or only invalidated: the caller must fetch.
    assert not state.properties_changed(guest_path("zz"), GUEST_INTERFACE, {}, [])
    assert not state.properties_changed(HOST_PATH, HOST_INTERFACE, {}, ["MemFree"])

    assert state.interfaces_added(guest_path("b"), {GUEST_INTERFACE: {
        "Name": Variant("s", "beta"), "BalloonCurrent": Variant("t", GiB)}})
    assert not state.interfaces_added(f"{MANAGER_PATH}/other", {"x.Y": {}})
    text = "\n".join(state.lines())
    assert "alpha" in text and "beta" in text and "2 guests" in text
    assert state.interfaces_removed(guest_path("a"), [GUEST_INTERFACE, "org.freedesktop.DBus.Peer"])
    assert not state.interfaces_removed(guest_path("a"), [GUEST_INTERFACE])
    text = "\n".join(state.lines())
    assert "alpha" not in text and "beta" in text and "1 guests" in text
    state.running = False
    assert "not running" in "\n".join(state.lines())


# -- exit codes ------------------------------------------------------------------------


def test_exit_codes_are_distinct_and_documented():
    codes = {name: getattr(exitcodes, name) for name in (
        "OK", "POLICY_ERROR", "INVALID_ARGUMENT", "NOT_RUNNING", "ACCESS_DENIED",
        "NOT_FOUND", "FAILED", "INTERRUPTED")}
    assert (codes["OK"], codes["POLICY_ERROR"], codes["INVALID_ARGUMENT"]) == (0, 1, 2)
    assert len(set(codes.values())) == len(codes)
    for value in codes.values():
        assert f"\n  {value} " in "\n" + exitcodes.EPILOG
    assert "exit codes:" in build_parser().format_help()


@pytest.mark.parametrize("name, code, words", [
    ("org.freedesktop.DBus.Error.ServiceUnknown", exitcodes.NOT_RUNNING, "not running"),
    ("org.freedesktop.DBus.Error.NameHasNoOwner", exitcodes.NOT_RUNNING, "not running"),
    ("org.freedesktop.DBus.Error.NoServer", exitcodes.NOT_RUNNING, "not running"),
    ("org.freedesktop.DBus.Error.Disconnected", exitcodes.NOT_RUNNING, "not running"),
    ("org.freedesktop.DBus.Error.Spawn.ChildExited", exitcodes.NOT_RUNNING, "started"),
    ("org.freedesktop.DBus.Error.AccessDenied", exitcodes.ACCESS_DENIED, "as root"),
    ("org.freedesktop.DBus.Error.InteractiveAuthorizationRequired",
     exitcodes.ACCESS_DENIED, "agent"),
    (contract.NOT_FOUND, exitcodes.NOT_FOUND, "not found"),
    ("org.freedesktop.DBus.Error.UnknownObject", exitcodes.NOT_FOUND, "not found"),
    (contract.INVALID_ARGUMENT, exitcodes.INVALID_ARGUMENT, "invalid argument"),
    ("org.freedesktop.DBus.Error.InvalidArgs", exitcodes.INVALID_ARGUMENT, "invalid argument"),
    (contract.POLICY_SYNTAX, exitcodes.POLICY_ERROR, "policy error"),
    (contract.FAILED, exitcodes.FAILED, "failed"),
    ("org.freedesktop.DBus.Error.NoReply", exitcodes.FAILED, "NoReply"),
    ("com.example.Whatever", exitcodes.FAILED, "com.example.Whatever"),
])
def test_dbus_error_mapping(name, code, words):
    assert exitcodes.for_dbus_error(name) == code
    error = describe_dbus_error(name, "the detail: line 3")
    assert error.code == code
    assert words in str(error)
    if code != exitcodes.NOT_RUNNING or "Spawn" in name:
        assert "the detail: line 3" in str(error)


def test_error_reply_message_becomes_momctl_error():
    """An ERROR reply (what bus.call returns) is turned into MomctlError."""
    import asyncio

    from momservice.cli.bus_client import MomClient

    class FakeBus:
        async def call(self, msg):
            assert msg.flags == 4  # ALLOW_INTERACTIVE_AUTHORIZATION
            return Message(message_type=MessageType.ERROR, reply_serial=1,
                           error_name=contract.POLICY_SYNTAX,
                           signature="s", body=["p:2: unbalanced parenthesis"])

    client = MomClient(FakeBus(), "fake")  # type: ignore[arg-type]
    with pytest.raises(MomctlError) as info:
        asyncio.run(client.call(MANAGER_PATH, MANAGER_INTERFACE, "SetPolicy", "ss",
                                ["p", "("], interactive=True))
    assert info.value.code == exitcodes.POLICY_ERROR
    assert "p:2: unbalanced parenthesis" in str(info.value)


def test_no_bus_is_not_running(capsys, tmp_path):
    code = main(["status", "--address", f"unix:path={tmp_path}/no-such-socket"])
    _, err = capsys.readouterr()
    assert code == exitcodes.NOT_RUNNING
    assert "cannot connect" in err and "Traceback" not in err


def test_bad_address_is_invalid_argument(capsys):
    code = main(["--address", "carrier-pigeon:coop=1", "status"])
    _, err = capsys.readouterr()
    assert code == exitcodes.INVALID_ARGUMENT
    assert "bad bus address" in err


# -- CPU tuning -----------------------------------------------------------------------

@pytest.mark.parametrize("text, key, signature, value", [
    ("quota=-1", "quota", "x", -1), ("QUOTA = 25000", "quota", "x", 25000),
    ("period=100000", "period", "t", 100000),
])
def test_cputune_setting(text, key, signature, value):
    name, variant = cputune_setting(text)
    assert (name, variant.signature, variant.value) == (key, signature, value)


@pytest.mark.parametrize("text", ["quota=-2", "period=-1", "quota=1.5", "shares=5", "quota",
                                  f"quota={2**63}"])
def test_cputune_setting_refuses(text):
    with pytest.raises(UsageError):
        cputune_setting(text)


def test_cpu_tuning_properties_read_for_people():
    quota, period = GUEST_BY_PROPERTY["VcpuQuota"], GUEST_BY_PROPERTY["VcpuPeriod"]
    assert field_text(quota, -1) == "-1 (unlimited)"
    assert field_text(quota, 25000) == "25000 us"
    assert field_text(period, 0) == "unknown"
    lines = cputune_lines("web1", {"VcpuQuota": 25000, "VcpuPeriod": 100000,
                                   "VcpuUserLimit": 25, "VcpuCount": 2, "Name": "web1"})
    assert lines == ["web1:", "  VcpuQuota      25000 us", "  VcpuPeriod     100000 us",
                     "  VcpuUserLimit  25", "  VcpuCount      2"]
    assert "GuestCpuTune" in cputune_lines("db1", {"VcpuQuota": 0, "VcpuPeriod": 0,
                                                   "VcpuUserLimit": 0, "VcpuCount": 0})[0]
