"""Tests of momd's configuration: MoM-style momd.conf files, defaults,
validation, warnings and the command line."""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from momservice import config as cfg
from momservice.config import (
    CommandLine, Config, ConfigError, apply_overrides, command_line_help, config_from_args,
    config_from_string, load_config, parse_command_line, shipped_policy_dir,
)

LOGGER = "momservice.config"


def write(tmp_path: Path, text: str, name: str = "momd.conf") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load_text(tmp_path: Path, text: str) -> Config:
    return load_config(write(tmp_path, text), explicit=True)


def warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == LOGGER and r.levelno == logging.WARNING]


@pytest.fixture(autouse=True)
def _capture(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)


# A momd.conf in the style vdsm ships (with libvirt instead of vdsm).
VDSM_STYLE = """\
    [main]
    # The wake up frequency of the main daemon (in seconds)
    main-loop-interval: 5

    # The data collection interval for host statistics (in seconds)
    host-monitor-interval: 15

    # The data collection interval for guest statistics (in seconds)
    guest-monitor-interval: 15

    guest-manager-interval: 15

    hypervisor-interface: libvirt

    policy-engine-interval: 15

    # A comma-separated list of Controller plugins to enable
    controllers: Balloon, KSM

    sample-history-length: 10

    libvirt-hypervisor-uri: qemu:///system

    plot-dir:

    rpc-port: -1

    policy:

    policy-dir: /etc/vdsm/mom.d

    [logging]
    log: /var/log/vdsm/mom.log
    verbosity: info
    max-bytes: 2097152
    backup-count: 5

    [host]
    collectors: HostMemory, HostKSM, HostCpu

    [guest]
    collectors: GuestQemuProc, GuestMemory, GuestBalloon

    [Collector: GuestBalloon]
    # balloon-specific settings
    min_free: 0.20
    Max_Step: 0.15
"""

# MoM's own sample layout: empty values, commented-out keys, option sections
# for collectors that are not listed.
MOM_SAMPLE = """\
    [main]
    main-loop-interval: 5
    host-monitor-interval: 5
    guest-monitor-interval: 5
    guest-manager-interval: 5
    hypervisor-interface: libvirt
    policy-engine-interval: 10
    controllers: Balloon, KSM
    sample-history-length: 10
    libvirt-hypervisor-uri:
    plot-dir:
    rpc-port: -1
    policy:
    policy-dir:
    guest-manager-multi-thread:

    [logging]
    log: stdio
    verbosity: info
    #max-bytes: 2097152
    #backup-count: 5

    [host]
    collectors: HostMemory, HostKSM

    [guest]
    collectors: GuestQemuProc, GuestMemory, GuestBalloon

    [Collector: GuestQemuAgent]
    socket_path: /var/lib/libvirt/qemu

    [Collector: GuestNetworkDaemon]
    #name-to-ip-helper: doc/name-to-ip
"""


# ---------------------------------------------------------------- defaults

def test_defaults_are_moms_values_and_ours():
    c = Config.defaults()
    assert c.host_monitor_interval == 5
    assert c.guest_monitor_interval == 5
    assert c.guest_manager_interval == 5
    assert c.policy_engine_interval == 10
    assert c.sample_history_length == 10
    assert c.hypervisor_uri == ""
    assert c.controllers == ("Balloon", "KSM", "VirtioMem")
    assert c.host_collectors == ("HostMemory", "HostKSM", "HostCpu")
    # MoM's three, and ours: the cgroup memory limits (MemTune's).
    assert c.guest_collectors == ("GuestQemuProc", "GuestMemory",
                                  "GuestBalloon", "GuestMemTune", "GuestVirtioMem")
    assert c.collector_options == {}
    assert c.log == "stdio"
    assert c.verbosity == logging.INFO
    assert c.max_bytes == 2097152
    assert c.backup_count == 5
    assert c.state_dir == Path("/var/lib/mom")
    assert c.dry_run is False
    assert c.balloon_floor == 262144
    assert c.plot_dir is None
    assert c.policy_file is None
    assert c.policy_dir is None
    assert c.source is None


def test_default_types():
    c = Config.defaults()
    for name in ("host_monitor_interval", "guest_monitor_interval",
                 "guest_manager_interval", "policy_engine_interval"):
        assert isinstance(getattr(c, name), float), name
    for name in ("sample_history_length", "verbosity", "max_bytes",
                 "backup_count", "balloon_floor"):
        assert type(getattr(c, name)) is int, name
    assert isinstance(c.state_dir, Path)


def test_empty_file_gives_defaults(tmp_path):
    path = write(tmp_path, "")
    c = load_config(path, explicit=True)
    assert dataclasses.replace(c, source=None) == Config.defaults()
    assert c.source == path


def test_sections_without_keys_give_defaults(tmp_path):
    c = load_text(tmp_path, "[main]\n[logging]\n[host]\n[guest]\n")
    assert dataclasses.replace(c, source=None) == Config.defaults()


def test_config_is_frozen():
    c = Config.defaults()
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.dry_run = True  # type: ignore[misc]


def test_config_is_hashable_despite_options():
    hash(Config.defaults())


# ---------------------------------------------------------------- files

def test_vdsm_style_file(tmp_path, caplog):
    c = load_text(tmp_path, VDSM_STYLE)
    assert c.host_monitor_interval == 15
    assert c.guest_monitor_interval == 15
    assert c.guest_manager_interval == 15
    assert c.policy_engine_interval == 15
    assert c.sample_history_length == 10
    assert c.hypervisor_uri == "qemu:///system"
    assert c.controllers == ("Balloon", "KSM")
    assert c.plot_dir is None
    assert c.policy_file is None
    assert c.policy_dir == Path("/etc/vdsm/mom.d")
    assert c.log == "/var/log/vdsm/mom.log"
    assert c.verbosity == logging.INFO
    assert c.host_collectors == ("HostMemory", "HostKSM", "HostCpu")
    assert c.guest_collectors == ("GuestQemuProc", "GuestMemory",
                                  "GuestBalloon")
    # option names are case-insensitive (lower-cased), values verbatim
    assert c.collector_options == {
        "GuestBalloon": {"min_free": "0.20", "max_step": "0.15"}}
    assert c.policy_sources() == [Path("/etc/vdsm/mom.d")]
    msgs = warnings(caplog)
    assert len(msgs) == 3
    assert any("main-loop-interval" in m and "ignored" in m for m in msgs)
    assert any("rpc-port" in m and "ignored" in m for m in msgs)
    assert any("hypervisor-interface" in m and "ignored" in m for m in msgs)


def test_mom_sample_file(tmp_path, caplog):
    c = load_text(tmp_path, MOM_SAMPLE)
    assert c.hypervisor_uri == ""
    assert c.plot_dir is None
    assert c.policy_file is None and c.policy_dir is None
    assert c.max_bytes == 2097152 and c.backup_count == 5
    assert c.host_collectors == ("HostMemory", "HostKSM")
    assert c.collector_options == {
        "GuestQemuAgent": {"socket_path": "/var/lib/libvirt/qemu"},
        "GuestNetworkDaemon": {},
    }
    msgs = warnings(caplog)
    for key in ("main-loop-interval", "hypervisor-interface", "rpc-port",
                "guest-manager-multi-thread"):
        assert sum(key in m for m in msgs) == 1, key
    assert len(msgs) == 4


def test_every_key_set(tmp_path):
    c = load_text(tmp_path, """\
        [main]
        host-monitor-interval: 1
        guest-monitor-interval: 2.5
        guest-manager-interval: 3
        policy-engine-interval: 0.5
        sample-history-length: 7
        libvirt-hypervisor-uri: qemu+ssh://h/system
        controllers: KSM
        policy: /srv/one.policy
        plot-dir: /tmp/plots
        metrics-file: /var/lib/node_exporter/mom.prom
        state-dir: /run/mom-state
        cache-dir: /run/mom-cache
        policy-cache: no
        dry-run: yes
        balloon-floor: 1024
        [logging]
        log: /var/log/mom.log
        verbosity: debug
        max-bytes: 1000
        backup-count: 0
        [host]
        collectors: HostMemory, HostPressure
        [guest]
        collectors: GuestMemory
    """)
    assert c == Config(
        host_monitor_interval=1.0, guest_monitor_interval=2.5,
        guest_manager_interval=3.0, policy_engine_interval=0.5,
        sample_history_length=7, hypervisor_uri="qemu+ssh://h/system",
        controllers=("KSM",), host_collectors=("HostMemory", "HostPressure"),
        guest_collectors=("GuestMemory",), collector_options={},
        log="/var/log/mom.log", verbosity=logging.DEBUG, max_bytes=1000,
        backup_count=0, state_dir=Path("/run/mom-state"), dry_run=True,
        cache_dir=Path("/run/mom-cache"), policy_cache=False,
        balloon_floor=1024, plot_dir=Path("/tmp/plots"),
        metrics_file=Path("/var/lib/node_exporter/mom.prom"),
        policy_file=Path("/srv/one.policy"), policy_dir=None,
        source=tmp_path / "momd.conf")


def test_equals_sign_and_case_insensitive_keys(tmp_path):
    c = load_text(tmp_path, """\
        [main]
        Host-Monitor-Interval = 7
        DRY-RUN = on
    """)
    assert c.host_monitor_interval == 7
    assert c.dry_run is True


def test_interpolation_disabled(tmp_path):
    c = load_text(tmp_path, """\
        [main]
        libvirt-hypervisor-uri: qemu:///system?name=%(x)s%%
    """)
    assert c.hypervisor_uri == "qemu:///system?name=%(x)s%%"


def test_inline_semicolon_comment(tmp_path):
    c = load_text(tmp_path, "[main]\npolicy-engine-interval: 20 ; seconds\n")
    assert c.policy_engine_interval == 20


def test_duplicate_key_last_wins(tmp_path):
    c = load_text(tmp_path, """\
        [main]
        sample-history-length: 3
        sample-history-length: 4
    """)
    assert c.sample_history_length == 4


def test_not_ini_is_an_error(tmp_path):
    path = write(tmp_path, "host-monitor-interval: 5\n")
    with pytest.raises(ConfigError, match="momd.conf"):
        load_config(path, explicit=True)


def test_unreadable_path_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path, explicit=True)  # a directory


# ------------------------------------------------- missing file: default/-c

def test_missing_default_file_gives_defaults(tmp_path, monkeypatch, caplog):
    absent = tmp_path / "etc" / "momd.conf"
    monkeypatch.setattr(cfg, "DEFAULT_CONFIG_FILE", absent)
    c = load_config(None, explicit=False)
    assert c == Config.defaults()
    infos = [r for r in caplog.records
             if r.name == LOGGER and r.levelno == logging.INFO]
    assert len(infos) == 1 and str(absent) in infos[0].getMessage()
    assert warnings(caplog) == []


def test_default_file_is_read_when_present(tmp_path, monkeypatch):
    path = write(tmp_path, "[main]\nsample-history-length: 3\n")
    monkeypatch.setattr(cfg, "DEFAULT_CONFIG_FILE", path)
    assert load_config(None, explicit=False).sample_history_length == 3


def test_missing_explicit_file_is_an_error(tmp_path):
    absent = tmp_path / "nope.conf"
    with pytest.raises(ConfigError) as err:
        load_config(absent, explicit=True)
    assert str(absent) in str(err.value)
    assert "not found" in str(err.value)


def test_default_config_path():
    assert cfg.DEFAULT_CONFIG_FILE == Path("/etc/mom/momd.conf")


# ------------------------------------------------ warnings: ignored/unknown

@pytest.mark.parametrize("key,value", [
    ("rpc-port", "-1"),
    ("main-loop-interval", "60"),
    ("guest-manager-multi-thread", "true"),
    ("hypervisor-interface", "libvirt"),
    ("hypervisor-interface", "LibVirt"),
])
def test_unimplemented_key_warns_once(tmp_path, caplog, key, value):
    c = load_text(tmp_path, f"[main]\n{key}: {value}\n")
    msgs = warnings(caplog)
    assert len(msgs) == 1
    assert key in msgs[0] and "ignored" in msgs[0]
    assert dataclasses.replace(c, source=None) == Config.defaults()


@pytest.mark.parametrize("section", ["main", "logging", "host", "guest"])
def test_unknown_key_in_known_section_warns(tmp_path, caplog, section):
    load_text(tmp_path, f"[{section}]\nfrobnicate: 3\n")
    msgs = warnings(caplog)
    assert len(msgs) == 1
    assert f"[{section}] frobnicate" in msgs[0] and "ignored" in msgs[0]


def test_unknown_section_warns(tmp_path, caplog):
    load_text(tmp_path, "[extras]\nx: 1\n[DEFAULT]\nverbosity: debug\n")
    msgs = warnings(caplog)
    assert len(msgs) == 2
    assert any("[extras]" in m for m in msgs)
    assert any("[DEFAULT]" in m for m in msgs)


def test_miscased_section_is_not_used_and_hinted(tmp_path, caplog):
    c = load_text(tmp_path, "[Main]\nsample-history-length: 3\n")
    assert c.sample_history_length == 10
    (msg,) = warnings(caplog)
    assert "[Main]" in msg and "[main]" in msg


def test_known_keys_do_not_warn(tmp_path, caplog):
    load_text(tmp_path, """\
        [main]
        state-dir: /tmp/s
        dry-run: no
        balloon-floor: 0
        plot-dir:
        [logging]
        log: stdio
    """)
    assert warnings(caplog) == []


# ------------------------------------------------------ hypervisor-interface

@pytest.mark.parametrize("value", ["vdsm", "vdsmjsonrpc", "xen"])
def test_other_hypervisor_interface_is_an_error(tmp_path, value):
    with pytest.raises(ConfigError) as err:
        load_text(tmp_path, f"[main]\nhypervisor-interface: {value}\n")
    msg = str(err.value)
    assert msg.startswith("[main] hypervisor-interface:")
    assert "libvirt" in msg and repr(value) in msg


# -------------------------------------------------------------- policy keys

def test_policy_and_policy_dir_both_set_is_an_error(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_text(tmp_path, """\
            [main]
            policy: /etc/mom/a.policy
            policy-dir: /etc/mom/policy.d
        """)
    msg = str(err.value)
    assert "policy" in msg and "policy-dir" in msg and "only one" in msg


def test_empty_policy_with_policy_dir_is_fine(tmp_path):
    c = load_text(tmp_path, "[main]\npolicy:\npolicy-dir: /p\n")
    assert c.policy_file is None and c.policy_dir == Path("/p")


def test_etc_policy_dir_path():
    assert cfg.ETC_POLICY_DIR == Path("/etc/mom/policy.d")


def test_policy_sources_default_order(tmp_path, monkeypatch):
    etc = tmp_path / "policy.d"
    etc.mkdir()
    monkeypatch.setattr(cfg, "ETC_POLICY_DIR", etc)
    sources = Config.defaults().policy_sources()
    assert sources == [shipped_policy_dir(), etc]


def test_policy_sources_default_without_etc_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(cfg, "ETC_POLICY_DIR", tmp_path / "absent")
    assert Config.defaults().policy_sources() == [shipped_policy_dir()]


def test_default_policy_sources_load(tmp_path, monkeypatch):
    # The shipped policies, overridden by name from the /etc directory.
    from momservice.policy_files import find_policy_files
    shipped = shipped_policy_dir()
    if not shipped.is_dir():
        pytest.skip("no shipped policies here")
    etc = tmp_path / "policy.d"
    etc.mkdir()
    names = sorted(p.name for p in shipped.glob("*.policy"))
    assert names, "the shipped policy directory is empty"
    (etc / names[0]).write_text("(defvar local 1)\n")
    (etc / "99-local.policy").write_text("(defvar more 2)\n")
    monkeypatch.setattr(cfg, "ETC_POLICY_DIR", etc)
    found = find_policy_files(Config.defaults().policy_sources())
    assert found[names[0].removesuffix(".policy")] == etc / names[0]
    assert found["99-local"] == etc / "99-local.policy"
    for other in names[1:]:
        assert found[other.removesuffix(".policy")] == shipped / other


def test_policy_sources_single_file(tmp_path):
    c = load_text(tmp_path, "[main]\npolicy: /srv/rules.policy\n")
    assert c.policy_sources() == [Path("/srv/rules.policy")]


def test_policy_sources_dir(tmp_path):
    c = load_text(tmp_path, "[main]\npolicy-dir: /srv/policies\n")
    assert c.policy_sources() == [Path("/srv/policies")]


def test_shipped_policy_dir_in_source_tree():
    here = Path(cfg.__file__).resolve().parent.parent / "policies"
    expected = (here if here.is_dir()
                else Path(cfg.sys.prefix) / "share" / "mom" / "policies")
    assert shipped_policy_dir() == expected


def test_shipped_policy_dir_prefers_source_tree(tmp_path):
    (tmp_path / "momservice").mkdir()
    (tmp_path / "policies").mkdir()
    module = tmp_path / "momservice" / "config.py"
    found = cfg._shipped_policy_dir(module, "/usr")
    assert found == (tmp_path / "policies").resolve()


def test_shipped_policy_dir_installed(tmp_path):
    (tmp_path / "site" / "momservice").mkdir(parents=True)
    module = tmp_path / "site" / "momservice" / "config.py"
    found = cfg._shipped_policy_dir(module, "/opt/prefix")
    assert found == Path("/opt/prefix/share/mom/policies")


# -------------------------------------------------------------- bad values

BAD_VALUES = [
    ("main", "host-monitor-interval", "abc", "positive number of seconds"),
    ("main", "guest-monitor-interval", "0", "positive number of seconds"),
    ("main", "guest-manager-interval", "-5", "positive number of seconds"),
    ("main", "policy-engine-interval", "nan", "positive number of seconds"),
    ("main", "policy-engine-interval", "inf", "positive number of seconds"),
    ("main", "policy-engine-interval", "", "positive number of seconds"),
    ("main", "sample-history-length", "0", "integer >= 1"),
    ("main", "sample-history-length", "2.5", "integer >= 1"),
    ("main", "sample-history-length", "ten", "integer >= 1"),
    ("main", "dry-run", "maybe", "boolean"),
    ("main", "balloon-floor", "-1", "KiB"),
    ("main", "balloon-floor", "256M", "KiB"),
    ("main", "state-dir", "", "directory"),
    ("logging", "verbosity", "loud", "debug, info"),
    ("logging", "verbosity", "0", "1-5"),
    ("logging", "verbosity", "6", "1-5"),
    ("logging", "max-bytes", "2MB", "bytes"),
    ("logging", "max-bytes", "-1", "bytes"),
    ("logging", "backup-count", "-1", "integer >= 0"),
    ("logging", "backup-count", "x", "integer >= 0"),
    ("logging", "log", "", "stdio"),
]


@pytest.mark.parametrize("section,key,value,allowed", BAD_VALUES)
def test_bad_value_names_section_key_and_allowed(tmp_path, section, key,
                                                 value, allowed):
    with pytest.raises(ConfigError) as err:
        load_text(tmp_path, f"[{section}]\n{key}: {value}\n")
    msg = str(err.value)
    assert msg.startswith(f"[{section}] {key}: expected ")
    assert allowed in msg
    assert msg.endswith(f"got {value!r}")


def test_bad_interval_message_exactly(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_text(tmp_path, "[main]\npolicy-engine-interval: abc\n")
    assert str(err.value) == ("[main] policy-engine-interval: expected a "
                              "positive number of seconds, got 'abc'")


@settings(max_examples=50, deadline=None)
@given(st.floats(min_value=1e-6, max_value=1e9, allow_nan=False))
def test_any_positive_interval_is_kept(seconds):
    c = config_from_string(f"[main]\nhost-monitor-interval: {seconds!r}\n")
    assert c.host_monitor_interval == seconds


@settings(max_examples=50, deadline=None)
@given(st.floats(max_value=0.0) | st.just(math.inf) | st.just(-math.inf))
def test_non_positive_interval_is_rejected(seconds):
    with pytest.raises(ConfigError, match=r"^\[main\] guest-monitor-interval"):
        config_from_string(f"[main]\nguest-monitor-interval: {seconds!r}\n")


def test_integer_keys_accept_surrounding_space(tmp_path):
    c = load_text(tmp_path, "[logging]\nmax-bytes:    4096   \n")
    assert c.max_bytes == 4096


# -------------------------------------------------------------- verbosity

@pytest.mark.parametrize("value,level", [
    ("debug", logging.DEBUG), ("DEBUG", logging.DEBUG),
    ("info", logging.INFO), ("Info", logging.INFO),
    ("warn", logging.WARNING), ("warning", logging.WARNING),
    ("WARNING", logging.WARNING),
    ("error", logging.ERROR), ("critical", logging.CRITICAL),
    ("5", logging.DEBUG), ("4", logging.INFO), ("3", logging.WARNING),
    ("2", logging.ERROR), ("1", logging.CRITICAL),
])
def test_verbosity_names_and_numbers(tmp_path, value, level):
    c = load_text(tmp_path, f"[logging]\nverbosity: {value}\n")
    assert c.verbosity == level


# -------------------------------------------------------------- booleans

@pytest.mark.parametrize("value,expected", [
    ("true", True), ("True", True), ("yes", True), ("YES", True),
    ("1", True), ("on", True),
    ("false", False), ("FALSE", False), ("no", False), ("0", False),
    ("off", False), ("Off", False),
])
def test_dry_run_booleans(tmp_path, value, expected):
    c = load_text(tmp_path, f"[main]\ndry-run: {value}\n")
    assert c.dry_run is expected


# -------------------------------------------------------------- log target

@pytest.mark.parametrize("value,expected", [
    ("stdio", "stdio"), ("STDIO", "stdio"),
    ("/var/log/mom.log", "/var/log/mom.log"),
])
def test_log_target(tmp_path, value, expected):
    assert load_text(tmp_path, f"[logging]\nlog: {value}\n").log == expected


# -------------------------------------------------- collectors, controllers

def test_unknown_host_collector_names_allowed_ones(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_text(tmp_path, "[host]\ncollectors: HostMemory, HostNUMA\n")
    msg = str(err.value)
    assert msg.startswith("[host] collectors:")
    assert "'HostNUMA'" in msg
    for name in ("HostMemory", "HostKSM", "HostCpu", "HostPressure"):
        assert name in msg


def test_guest_collector_in_host_list_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match=r"^\[host\] collectors:"):
        load_text(tmp_path, "[host]\ncollectors: GuestMemory\n")


def test_unknown_guest_collector_names_allowed_ones(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_text(tmp_path, "[guest]\ncollectors: GuestMagic\n")
    msg = str(err.value)
    assert msg.startswith("[guest] collectors:") and "'GuestMagic'" in msg
    for name in ("GuestQemuProc", "GuestMemory", "GuestBalloon"):
        assert name in msg


def test_collector_names_are_canonicalised_and_deduplicated(tmp_path):
    c = load_text(tmp_path, """\
        [host]
        collectors: hostmemory,HOSTKSM , HostMemory,,
        [guest]
        collectors: guestballoon
    """)
    assert c.host_collectors == ("HostMemory", "HostKSM")
    assert c.guest_collectors == ("GuestBalloon",)


def test_empty_collector_list(tmp_path):
    c = load_text(tmp_path, "[host]\ncollectors:\n")
    assert c.host_collectors == ()


def test_unimplemented_guest_collector_accepted_with_one_warning(tmp_path, caplog):
    c = load_text(tmp_path, """\
        [guest]
        collectors: GuestQemuProc, GuestNetworkDaemon, GuestMemory, GuestNetworkDaemon
    """)
    assert c.guest_collectors == ("GuestQemuProc", "GuestMemory")
    msgs = warnings(caplog)
    assert len(msgs) == 1
    assert "GuestNetworkDaemon" in msgs[0] and "not implemented" in msgs[0]


def test_guest_qemu_agent_is_a_collector_in_the_order_given(tmp_path, caplog):
    c = load_text(tmp_path, """\
        [guest]
        collectors: GuestQemuProc, guestqemuagent, GuestMemory, GuestQemuAgent
    """)
    assert c.guest_collectors == ("GuestQemuProc", "GuestQemuAgent", "GuestMemory")
    assert warnings(caplog) == []


def test_guest_qemu_agent_keys_checked_and_kept(tmp_path, caplog):
    c = load_text(tmp_path, """\
        [Collector: GuestQemuAgent]
        socket_path: /run/qga
        socket_name_template: qga-%(name)s.sock
        timeout: 0.5
        sockets: 2
    """)
    assert c.collector_options == {"GuestQemuAgent": {
        "socket_path": "/run/qga", "socket_name_template": "qga-%(name)s.sock",
        "timeout": "0.5"}}
    (msg,) = warnings(caplog)
    assert "sockets" in msg and "unknown key" in msg


@pytest.mark.parametrize("key, value, expected", [
    ("timeout", "0", "a positive number of seconds"),
    ("timeout", "soon", "a positive number of seconds"),
    ("socket_path", "", "a directory path"),
    ("socket_name_template", "%(uuid)s.agent", "%(name)s"),
    ("socket_name_template", "%(name)d", "%(name)s"),
])
def test_guest_qemu_agent_bad_values(tmp_path, key, value, expected):
    with pytest.raises(ConfigError) as err:
        load_text(tmp_path, f"[Collector: GuestQemuAgent]\n{key}: {value}\n")
    assert str(err.value).startswith(f"[Collector: GuestQemuAgent] {key}:")
    assert expected in str(err.value)


def test_moms_optional_collectors_read_as_plain(tmp_path, caplog):
    c = load_text(tmp_path, """\
        [guest]
        collectors: GuestMemoryOptional, GuestBalloonOptional
    """)
    assert c.guest_collectors == ("GuestMemory", "GuestBalloon")
    assert len(warnings(caplog)) == 2


def test_vdsms_controllers_are_all_implemented(tmp_path, caplog):
    # vdsm's mom.conf: "controllers: Balloon, KSM, CpuTune, IoTune" (any case).
    c = load_text(tmp_path, "[main]\ncontrollers: Balloon, ksm, Cputune, IOTune\n")
    assert c.controllers == ("Balloon", "KSM", "CpuTune", "IoTune")
    assert warnings(caplog) == []


def test_unknown_controller_is_an_error(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_text(tmp_path, "[main]\ncontrollers: Balloon, Swap\n")
    msg = str(err.value)
    assert msg.startswith("[main] controllers:")
    assert "'Swap'" in msg and "Balloon, KSM" in msg


def test_no_controllers(tmp_path):
    assert load_text(tmp_path, "[main]\ncontrollers:\n").controllers == ()


def test_collector_sections(tmp_path, caplog):
    c = load_text(tmp_path, """\
        [Collector: guestqemuagent]
        socket_path: /run/qga
        [Collector:HostKSM]
        A: 1
        [Collector: Nonsense]
        b: 2
        [Collector: GuestMemoryOptional]
        c: 3
    """)
    assert c.collector_options == {
        "GuestQemuAgent": {"socket_path": "/run/qga"},
        "HostKSM": {"a": "1"},
        "GuestMemory": {"c": "3"},
    }
    (msg,) = warnings(caplog)
    assert "Nonsense" in msg


# -------------------------------------------------------------- overrides

def test_overrides_none_change_nothing(tmp_path):
    c = load_text(tmp_path, VDSM_STYLE)
    assert apply_overrides(c) == c


def test_overrides_win_over_file(tmp_path):
    c = load_text(tmp_path, """\
        [main]
        policy: /etc/mom/file.policy
        dry-run: false
        [logging]
        log: /var/log/mom.log
        verbosity: error
    """)
    o = apply_overrides(c, rules_file="/tmp/cli.policy", log="stdio",
                        verbosity="debug", dry_run=True)
    assert o.policy_file == Path("/tmp/cli.policy")
    assert o.policy_dir is None
    assert o.log == "stdio"
    assert o.verbosity == logging.DEBUG
    assert o.dry_run is True
    # the original is untouched
    assert c.log == "/var/log/mom.log" and c.dry_run is False


def test_rules_file_replaces_policy_dir_of_file(tmp_path):
    c = load_text(tmp_path, "[main]\npolicy-dir: /etc/vdsm/mom.d\n")
    o = apply_overrides(c, rules_file=Path("/tmp/r.policy"))
    assert o.policy_sources() == [Path("/tmp/r.policy")]
    assert o.policy_dir is None


def test_policy_dir_replaces_policy_of_file(tmp_path):
    c = load_text(tmp_path, "[main]\npolicy: /etc/mom/one.policy\n")
    o = apply_overrides(c, policy_dir="/tmp/pol")
    assert o.policy_sources() == [Path("/tmp/pol")]
    assert o.policy_file is None


def test_rules_file_and_policy_dir_together_is_an_error():
    with pytest.raises(ConfigError, match="only one"):
        apply_overrides(Config.defaults(), rules_file="/a", policy_dir="/b")


def test_dry_run_false_override_turns_it_off(tmp_path):
    c = load_text(tmp_path, "[main]\ndry-run: true\n")
    assert apply_overrides(c, dry_run=False).dry_run is False
    assert apply_overrides(c, dry_run=None).dry_run is True


@pytest.mark.parametrize("value,level", [
    ("3", logging.WARNING), (1, logging.CRITICAL), ("WARN", logging.WARNING)])
def test_verbosity_override_values(value, level):
    assert apply_overrides(Config.defaults(),
                           verbosity=value).verbosity == level


@pytest.mark.parametrize("kwargs,option", [
    ({"verbosity": "chatty"}, "--verbosity"),
    ({"log": ""}, "--log"),
    ({"rules_file": ""}, "--rules-file"),
    ({"policy_dir": " "}, "--policy-dir"),
])
def test_bad_override_names_the_option(kwargs, option):
    with pytest.raises(ConfigError) as err:
        apply_overrides(Config.defaults(), **kwargs)
    assert str(err.value).startswith(f"{option}: expected ")


# ------------------------------------------------------------ command line

def test_command_line_defaults():
    assert parse_command_line([]) == CommandLine(
        config_file=None, rules_file=None, policy_dir=None, log=None, verbosity=None,
        dry_run=None, metrics_file=None, help=False)


def test_command_line_short_options():
    args = parse_command_line(
        ["-c", "/x.conf", "-r", "/r.policy", "-P", "/pd", "-l", "stdio",
         "-v", "debug", "--dry-run"])
    assert args.config_file == Path("/x.conf")
    assert args.rules_file == "/r.policy"
    assert args.policy_dir == "/pd"
    assert args.log == "stdio"
    assert args.verbosity == "debug"
    assert args.dry_run is True


def test_command_line_long_options():
    args = parse_command_line(
        ["--config-file", "/x.conf", "--rules-file", "/r",
         "--policy-dir", "/pd", "--log", "/l.log", "--verbosity", "5"])
    assert (args.config_file, args.rules_file, args.policy_dir, args.log,
            args.verbosity, args.dry_run) == (
        Path("/x.conf"), "/r", "/pd", "/l.log", "5", None)


def test_command_line_values_joined_abbreviated_repeated():
    args = parse_command_line(["-c/a.conf", "--log=/l.log", "--verb", "3", "--metrics-file=",
                               "-v", "4", "--dry"])
    assert (args.config_file, args.log, args.verbosity, args.metrics_file, args.dry_run) == (
        Path("/a.conf"), "/l.log", "4", "", True)
    assert parse_command_line(["--help"]).help and parse_command_line(["-h"]).help


@pytest.mark.parametrize("argv, message", [
    (["--daemon"], "option --daemon not recognized"),
    (["-x"], "option -x not recognized"),
    (["-c"], "option -c requires argument"),
    (["--log"], "option --log requires argument"),
    (["--dry-run=yes"], "option --dry-run must not have an argument"),
    (["-c", "/x.conf", "extra"], "unexpected argument 'extra'"),
])
def test_command_line_rejects(argv, message):
    with pytest.raises(ConfigError, match=message):
        parse_command_line(argv)


def test_the_help_names_exactly_these_options():
    text = command_line_help()
    assert text.startswith("Usage: momd [OPTION]...\n")
    options = set(re.findall(r"^  (?:-(\w), )?\s*--([\w-]+)", text, re.M))
    assert options == {("h", "help"), ("c", "config-file"), ("r", "rules-file"),
                       ("P", "policy-dir"), ("l", "log"), ("v", "verbosity"),
                       ("", "dry-run"), ("", "metrics-file")}
    assert f"(default: {cfg.DEFAULT_CONFIG_FILE})" in " ".join(text.split())
    assert max(len(line) for line in text.splitlines()) <= 80
    for short, name in options:  # every option the help names is one
        parse_command_line([f"--{name}"] if name in ("help", "dry-run") else [f"--{name}", "x"])


def test_momd_prints_its_help_and_refuses_a_bad_command_line():
    def momd(*args):
        return subprocess.run([sys.executable, "-m", "momservice.momd", *args],
                              capture_output=True, text=True, timeout=60,
                              cwd=Path(cfg.__file__).resolve().parents[1])
    shown = momd("--help")
    assert (shown.returncode, shown.stdout, shown.stderr) == (0, command_line_help(), "")
    refused = momd("--daemon")
    assert (refused.returncode, refused.stdout) == (2, "")
    assert refused.stderr == "momd: option --daemon not recognized (momd --help lists the options)\n"


def test_metrics_file_is_off_unless_named(tmp_path):
    assert Config.defaults().metrics_file is None
    assert load_text(tmp_path, "[main]\nmetrics-file:\n").metrics_file is None
    c = load_text(tmp_path, "[main]\nmetrics-file: /srv/prom/mom.prom\n")
    assert c.metrics_file == Path("/srv/prom/mom.prom")


def test_metrics_file_option_wins_over_the_file(tmp_path):
    conf = tmp_path / "momd.conf"
    conf.write_text("[main]\nmetrics-file = /srv/prom/mom.prom\n")
    given = config_from_args(parse_command_line(["-c", str(conf), "--metrics-file",
                                                 str(tmp_path / "m.prom")]))
    assert given.metrics_file == tmp_path / "m.prom"
    # Empty on the command line: none, whatever the file says.
    assert config_from_args(parse_command_line(
        ["-c", str(conf), "--metrics-file", ""])).metrics_file is None
    assert config_from_args(parse_command_line(
        ["-c", str(conf)])).metrics_file == Path("/srv/prom/mom.prom")


def test_config_from_args_explicit_missing_file_is_an_error(tmp_path):
    args = parse_command_line(["-c", str(tmp_path / "no.conf")])
    with pytest.raises(ConfigError, match="not found"):
        config_from_args(args)


def test_config_from_args_default_missing_is_fine(tmp_path, monkeypatch):
    monkeypatch.setattr(cfg, "DEFAULT_CONFIG_FILE", tmp_path / "absent")
    args = parse_command_line(["-v", "2", "--dry-run"])
    c = config_from_args(args)
    assert c.verbosity == logging.ERROR and c.dry_run is True
    assert c.host_collectors == Config.defaults().host_collectors


def test_config_from_args_file_then_command_line(tmp_path):
    path = write(tmp_path, VDSM_STYLE)
    args = parse_command_line(
        ["-c", str(path), "-r", "/tmp/x.policy", "-l", "stdio"])
    c = config_from_args(args)
    assert c.host_monitor_interval == 15          # from the file
    assert c.log == "stdio"                       # from the command line
    assert c.policy_sources() == [Path("/tmp/x.policy")]
