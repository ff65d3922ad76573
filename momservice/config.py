"""The configuration of ``momd``: the model, the INI loader, the command line.

An existing MoM ``momd.conf`` keeps working: the same sections, keys and
meanings.  The file is plain INI (``key: value`` or ``key = value``, ``#``
comments, ``;`` comments also after a value), read without interpolation;
key names are case-insensitive, section names are not.

Sections and keys
=================

``[main]``
    ``host-monitor-interval`` (5), ``guest-monitor-interval`` (5),
    ``guest-manager-interval`` (5), ``policy-engine-interval`` (10): seconds,
    any positive number (``0.5`` is fine).
    ``sample-history-length`` (10): an integer >= 1.
    ``libvirt-hypervisor-uri`` (empty: libvirt's default URI).
    ``controllers`` (``Balloon, KSM, VirtioMem``): comma-separated.
    ``policy``: one policy file (momd's "rules file");
    ``policy-dir``: a directory of policies; at most one of the two.
    ``plot-dir`` (empty: no plotting).
    ``metrics-file`` (empty: none): a file momd rewrites after every
    collection with its metrics in Prometheus' text format, for
    node_exporter's textfile collector (:mod:`momservice.metrics`).
    ``explain-length`` (20) and ``explain-max-age`` (86400 seconds): how
    many applied controls momd keeps per guest for ``momctl explain``, and
    for how long at most (:mod:`momservice.engine.explain`).
    Our own keys: ``state-dir`` (``/var/lib/mom``), ``cache-dir`` and
    ``policy-cache`` (where the compiled code of the policies is kept
    between runs, see :meth:`Config.policy_cache_dir`; ``policy-cache = no``:
    nowhere, every start compiles), ``dry-run`` (a boolean:
    true/false, yes/no, on/off, 1/0) and ``balloon-floor`` (KiB, 256 MiB by
    default: no balloon target below it is ever applied).
    MoM keys mom does not implement -- ``rpc-port``, ``main-loop-interval``,
    ``guest-manager-multi-thread`` and ``hypervisor-interface: libvirt`` --
    are accepted and ignored with one warning each.  Any other
    ``hypervisor-interface`` (MoM's ``vdsm``, ``vdsmjsonrpc``, ...) is an
    error: mom talks to libvirt only.

``[logging]``
    ``log`` (``stdio``, or a file path), ``verbosity`` (``info``; see
    :func:`parse_verbosity`), ``max-bytes`` (2097152) and ``backup-count``
    (5) for the rotation of a log file.

``[host]`` / ``[guest]``
    ``collectors``: comma-separated collector names, by default
    ``HostMemory, HostKSM, HostCpu`` and
    ``GuestQemuProc, GuestMemory, GuestBalloon, GuestMemTune, GuestVirtioMem``
    (MoM's three, and the cgroup memory limits and the virtio-mem device,
    read from the definition momd keeps per guest anyway).  Only the listed
    collectors' statistics are collected (``momservice.collectors.registry``
    says which fields each provides; mom's ``HostMemory`` includes the
    kernel's memory pressure, which ``HostPressure`` provides alone).

``[Collector: NAME]``
    Options for one collector, kept as strings in
    :attr:`Config.collector_options` under the collector's name.
    ``[Collector: GuestQemuAgent]`` (see docs/mechanisms/guest-agent.md):
    MoM's ``socket_path`` (``/var/lib/libvirt/qemu``) and
    ``socket_name_template`` (``%(name)s.agent``), for guests whose agent
    libvirt has no channel for, and our ``timeout`` (2 seconds: the
    longest one guest's agent is waited for); checked when loaded, other
    keys warned about.

Unknown keys in these sections and unknown sections are warned about and
ignored (old configurations carry extra keys).  A bad value raises
:class:`ConfigError` naming the section, the key, what is allowed and what
was found.
"""

from __future__ import annotations

import configparser
import dataclasses
import getopt
import logging
import math
import os
import re
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .collectors.registry import GUEST_COLLECTORS as _GUEST_REGISTRY
from .collectors.registry import HOST_COLLECTORS as _HOST_REGISTRY
from .controllers.balloon import DEFAULT_FLOOR_KIB
from .controllers.registry import MECHANISMS

_logger = logging.getLogger(__name__)

#: Where momd looks for its configuration when ``-c`` is not given.
DEFAULT_CONFIG_FILE = Path("/etc/mom/momd.conf")

#: The administrator's policies; they override shipped ones of the same name.
ETC_POLICY_DIR = Path("/etc/mom/policy.d")

DEFAULT_STATE_DIR = Path("/var/lib/mom")
DEFAULT_BALLOON_FLOOR = DEFAULT_FLOOR_KIB  # KiB: the Balloon mechanism's
#: VirtioMem and GuestVirtioMem: the shipped policies prefer a guest's
#: virtio-mem device to its balloon, and a guest without one costs nothing.
DEFAULT_CONTROLLERS: tuple[str, ...] = ("Balloon", "KSM", "VirtioMem")
DEFAULT_HOST_COLLECTORS: tuple[str, ...] = ("HostMemory", "HostKSM", "HostCpu")
DEFAULT_GUEST_COLLECTORS: tuple[str, ...] = (
    "GuestQemuProc", "GuestMemory", "GuestBalloon", "GuestMemTune", "GuestVirtioMem")

#: Implemented plugins, in their canonical spelling: the registries' names.
HOST_COLLECTORS: tuple[str, ...] = tuple(_HOST_REGISTRY)
GUEST_COLLECTORS: tuple[str, ...] = tuple(_GUEST_REGISTRY)
CONTROLLERS: tuple[str, ...] = tuple(MECHANISMS)

#: MoM plugins mom accepts in an old configuration but does not implement:
#: they are dropped from the lists, with one warning each.
UNIMPLEMENTED_HOST_COLLECTORS: tuple[str, ...] = ()
UNIMPLEMENTED_GUEST_COLLECTORS: tuple[str, ...] = (
    "GuestNetworkDaemon",)
UNIMPLEMENTED_CONTROLLERS: tuple[str, ...] = ()

#: MoM's "Optional" collector variants, read as the collector they vary
#: (with one warning each): in mom, the optional statistics of a collector are
#: optional anyway.
COLLECTOR_ALIASES: dict[str, str] = {
    "GuestMemoryOptional": "GuestMemory",
    "GuestBalloonOptional": "GuestBalloon",
}

#: MoM's verbosity numbers (its documented scale: 1 = critical ... 5 = debug).
VERBOSITY_NUMBERS: dict[str, int] = {
    "1": logging.CRITICAL,
    "2": logging.ERROR,
    "3": logging.WARNING,
    "4": logging.INFO,
    "5": logging.DEBUG,
}
VERBOSITY_NAMES: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

_TRUE = frozenset({"1", "yes", "true", "on"})
_FALSE = frozenset({"0", "no", "false", "off"})

# Keys of [main] that MoM had and mom ignores (hypervisor-interface is handled
# on its own: only "libvirt" is acceptable).
_IGNORED_MAIN_KEYS = ("rpc-port", "main-loop-interval",
                      "guest-manager-multi-thread")

_COLLECTOR_SECTION = re.compile(r"^\s*collector\s*:\s*(.*?)\s*$",
                                re.IGNORECASE)

# No [DEFAULT] magic: a section of that name is just an unknown section.
_NO_DEFAULT_SECTION = "\x00no default section\x00"


class ConfigError(Exception):
    """A configuration that momd cannot run with.

    The message says where (``[section] key``, a command-line option or the
    file), what is allowed and what was found.
    """


@dataclass(frozen=True)
class Config:
    """Everything momd's configuration decides, validated and typed.

    Built by :func:`load_config` from a MoM-style ``momd.conf`` (or by
    :meth:`defaults`), then adjusted by the command line with
    :func:`apply_overrides`.  The monitors, the policy engine, the controllers
    and the logging setup read their settings from here, never from the INI
    file.  Frozen: derive a changed copy with :func:`dataclasses.replace`.
    """

    host_monitor_interval: float = 5.0
    guest_monitor_interval: float = 5.0
    guest_manager_interval: float = 5.0
    policy_engine_interval: float = 10.0
    sample_history_length: int = 10
    #: libvirt connection URI; empty means libvirt's default.
    hypervisor_uri: str = ""
    controllers: tuple[str, ...] = DEFAULT_CONTROLLERS
    host_collectors: tuple[str, ...] = DEFAULT_HOST_COLLECTORS
    guest_collectors: tuple[str, ...] = DEFAULT_GUEST_COLLECTORS
    #: ``[Collector: NAME]`` sections: canonical collector name -> options
    #: (option names lower-cased, values as written).
    collector_options: dict[str, dict[str, str]] = field(
        default_factory=dict, hash=False)
    #: ``"stdio"`` or the path of a log file.
    log: str = "stdio"
    #: A :mod:`logging` level.
    verbosity: int = logging.INFO
    max_bytes: int = 2097152
    backup_count: int = 5
    state_dir: Path = DEFAULT_STATE_DIR
    #: ``[main] cache-dir``: where the compiled code of the policies is kept
    #: (momservice.policy_cache); None: see ``policy_cache_dir``.
    cache_dir: Path | None = None
    #: ``[main] policy-cache``: whether it is kept at all.
    policy_cache: bool = True
    dry_run: bool = False
    #: KiB; no balloon target below it is ever applied.
    balloon_floor: int = DEFAULT_BALLOON_FLOOR
    plot_dir: Path | None = None
    #: ``[main] metrics-file`` / ``--metrics-file``: Prometheus text format; None: none.
    metrics_file: Path | None = None
    #: ``[main] explain-length``: records of applied controls kept per guest.
    explain_length: int = 20
    #: ``[main] explain-max-age``: seconds a record of an applied control is kept.
    explain_max_age: float = 86400.0
    #: ``[main] policy`` / ``-r``: a single policy file.
    policy_file: Path | None = None
    #: ``[main] policy-dir`` / ``-P``: a directory of policies.
    policy_dir: Path | None = None
    #: The file this was read from; None for built-in defaults.
    source: Path | None = None

    @classmethod
    def defaults(cls) -> Config:
        """The configuration of a host without a ``momd.conf``."""
        return cls()

    @property
    def policy_cache_dir(self) -> Path | None:
        """The directory of the policy code cache: ``cache-dir``; else
        $CACHE_DIRECTORY, which systemd's ``CacheDirectory=mom`` sets to
        /var/cache/mom; else ``cache`` in the state directory (so a momd with
        a state directory of its own, a test's, keeps its cache there too).
        None when ``policy-cache`` is off."""
        if not self.policy_cache:
            return None
        if self.cache_dir is not None:
            return self.cache_dir
        given = os.environ.get("CACHE_DIRECTORY", "").split(":")[0]
        return Path(given) if given else self.state_dir / "cache"

    def policy_sources(self) -> list[Path]:
        """Where policies come from, in order; later ones override earlier
        ones of the same name.

        ``policy`` set: that one file.  ``policy-dir`` set: that directory.
        Neither: the shipped policies (:func:`shipped_policy_dir`), then
        ``/etc/mom/policy.d`` if that directory exists.  What the user named,
        and the shipped directory, are listed even when absent, so that the
        policy loader reports them missing; the optional ``/etc`` directory
        is not.
        """
        if self.policy_file is not None:
            return [self.policy_file]
        if self.policy_dir is not None:
            return [self.policy_dir]
        sources = [shipped_policy_dir()]
        if ETC_POLICY_DIR.is_dir():
            sources.append(ETC_POLICY_DIR)
        return sources


# --------------------------------------------------------------------------
# Policy locations


def _shipped_policy_dir(module_file: str | Path, prefix: str | Path) -> Path:
    module = Path(module_file).resolve()
    source_tree = module.parent.parent / "policies"
    if source_tree.is_dir():
        return source_tree
    installed = Path(prefix) / "share" / "mom" / "policies"
    # <prefix>/lib/pythonX.Y/{site,dist}-packages/momservice/config.py: the
    # prefix the package was installed to, which need not be the
    # interpreter's (Debian's python3 with PREFIX=/usr/local).
    parents = module.parents
    if len(parents) > 4:
        beside = parents[4] / "share" / "mom" / "policies"
        if not installed.is_dir() and beside.is_dir():
            return beside
    return installed


def shipped_policy_dir() -> Path:
    """The policies shipped with mom.

    Run from the source tree, that is the repository's ``policies/``; for an
    installed package, ``share/mom/policies`` under the interpreter's prefix
    or, failing that, under the prefix the package was installed to.
    """
    return _shipped_policy_dir(__file__, sys.prefix)


# --------------------------------------------------------------------------
# Value parsers.  ``where`` names the setting in messages:
# "[main] policy-engine-interval" or "--verbosity".


def _bad(where: str, expected: str, got: object) -> ConfigError:
    return ConfigError(f"{where}: expected {expected}, got {got!r}")


def _seconds(where: str, raw: str) -> float:
    expected = "a positive number of seconds"
    try:
        value = float(raw.strip())
    except ValueError:
        raise _bad(where, expected, raw) from None
    if not math.isfinite(value) or value <= 0:
        raise _bad(where, expected, raw)
    return value


def _integer(where: str, raw: str, minimum: int, expected: str) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise _bad(where, expected, raw) from None
    if value < minimum:
        raise _bad(where, expected, raw)
    return value


def parse_bool(where: str, raw: str) -> bool:
    """true/false, yes/no, on/off, 1/0 in any case."""
    word = raw.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise _bad(where, "a boolean (true/false, yes/no, on/off, 1/0)", raw)


def parse_verbosity(where: str, raw: str | int) -> int:
    """A verbosity as MoM wrote it, to a :mod:`logging` level.

    Names, case-insensitive: ``debug``, ``info``, ``warn`` or ``warning``,
    ``error``, ``critical``.  Numbers, on MoM's documented scale where more is
    more verbose: ``1`` = critical, ``2`` = error, ``3`` = warning,
    ``4`` = info, ``5`` = debug.  Anything else is an error (MoM silently
    fell back to debug).
    """
    word = str(raw).strip().lower()
    if word in VERBOSITY_NAMES:
        return VERBOSITY_NAMES[word]
    if word in VERBOSITY_NUMBERS:
        return VERBOSITY_NUMBERS[word]
    raise _bad(where,
               "debug, info, warn, warning, error, critical "
               "or 1-5 (1 = critical ... 5 = debug)", raw)


def _log_target(where: str, raw: str) -> str:
    value = raw.strip()
    if not value:
        raise _bad(where, "'stdio' or a file path", raw)
    if value.lower() == "stdio":
        return "stdio"
    return value


def _optional_path(raw: str) -> Path | None:
    value = raw.strip()
    return Path(value) if value else None


def _required_path(where: str, raw: str, what: str = "a directory path"
                   ) -> Path:
    value = raw.strip()
    if not value:
        raise _bad(where, what, raw)
    return Path(value)


def _names(raw: str) -> list[str]:
    return [part.strip() for part in raw.split(",") if part.strip()]


def _plugin_list(where: str, raw: str, implemented: tuple[str, ...],
                 unimplemented: tuple[str, ...],
                 aliases: dict[str, str], kind: str) -> tuple[str, ...]:
    """Canonical names of the implemented plugins in ``raw``, in order, each
    once.  Names match case-insensitively (MoM's spelling is canonical)."""
    by_lower = {name.lower(): name for name in implemented}
    skipped = {name.lower(): name for name in unimplemented}
    alias = {name.lower(): (name, target) for name, target in aliases.items()}
    result: list[str] = []
    warned: set[str] = set()
    for name in _names(raw):
        key = name.lower()
        if key in by_lower:
            canonical = by_lower[key]
        elif key in alias:
            old, canonical = alias[key]
            if old not in warned:
                warned.add(old)
                _logger.warning("%s: MoM's %s is read as %s",
                                where, old, canonical)
        elif key in skipped:
            if skipped[key] not in warned:
                warned.add(skipped[key])
                _logger.warning("%s: %s is not implemented by mom, ignored",
                                where, skipped[key])
            continue
        else:
            raise ConfigError(
                f"{where}: unknown {kind} {name!r}; allowed: "
                f"{', '.join(implemented)}")
        if canonical not in result:
            result.append(canonical)
    return tuple(result)


def _host_collectors(where: str, raw: str) -> tuple[str, ...]:
    return _plugin_list(where, raw, HOST_COLLECTORS,
                        UNIMPLEMENTED_HOST_COLLECTORS, {}, "host collector")


def _guest_collectors(where: str, raw: str) -> tuple[str, ...]:
    return _plugin_list(where, raw, GUEST_COLLECTORS,
                        UNIMPLEMENTED_GUEST_COLLECTORS, COLLECTOR_ALIASES,
                        "guest collector")


def _controllers(where: str, raw: str) -> tuple[str, ...]:
    return _plugin_list(where, raw, CONTROLLERS, UNIMPLEMENTED_CONTROLLERS,
                        {}, "controller")


# --------------------------------------------------------------------------
# The INI file

# section -> key -> (Config attribute, parser(where, raw) -> value)
_Parser = Callable[[str, str], object]
_KEYS: dict[str, dict[str, tuple[str, _Parser]]] = {
    "main": {
        "host-monitor-interval": ("host_monitor_interval", _seconds),
        "guest-monitor-interval": ("guest_monitor_interval", _seconds),
        "guest-manager-interval": ("guest_manager_interval", _seconds),
        "policy-engine-interval": ("policy_engine_interval", _seconds),
        "sample-history-length": (
            "sample_history_length",
            lambda w, r: _integer(w, r, 1, "an integer >= 1")),
        "libvirt-hypervisor-uri": ("hypervisor_uri", lambda w, r: r.strip()),
        "controllers": ("controllers", _controllers),
        "policy": ("policy_file", lambda w, r: _optional_path(r)),
        "policy-dir": ("policy_dir", lambda w, r: _optional_path(r)),
        "plot-dir": ("plot_dir", lambda w, r: _optional_path(r)),
        "metrics-file": ("metrics_file", lambda w, r: _optional_path(r)),
        "explain-length": (
            "explain_length",
            lambda w, r: _integer(w, r, 1, "an integer >= 1")),
        "explain-max-age": ("explain_max_age", _seconds),
        "state-dir": ("state_dir", _required_path),
        "cache-dir": ("cache_dir", lambda w, r: _optional_path(r)),
        "policy-cache": ("policy_cache", parse_bool),
        "dry-run": ("dry_run", parse_bool),
        "balloon-floor": (
            "balloon_floor",
            lambda w, r: _integer(w, r, 0, "a whole number of KiB >= 0")),
    },
    "logging": {
        "log": ("log", _log_target),
        "verbosity": ("verbosity", parse_verbosity),
        "max-bytes": (
            "max_bytes",
            lambda w, r: _integer(w, r, 0, "a whole number of bytes >= 0")),
        "backup-count": (
            "backup_count",
            lambda w, r: _integer(w, r, 0, "an integer >= 0")),
    },
    "host": {"collectors": ("host_collectors", _host_collectors)},
    "guest": {"collectors": ("guest_collectors", _guest_collectors)},
}

_ALL_COLLECTORS = {
    name.lower(): name
    for name in (HOST_COLLECTORS + GUEST_COLLECTORS
                 + UNIMPLEMENTED_HOST_COLLECTORS
                 + UNIMPLEMENTED_GUEST_COLLECTORS + tuple(COLLECTOR_ALIASES))
}


def _socket_name_template(where: str, raw: str) -> str:
    try:
        raw.strip() % {"name": "guest"}
    except (KeyError, ValueError, TypeError):
        raise _bad(where, "a file name naming the guest as %(name)s", raw) from None
    return raw


#: Collector -> its ``[Collector: NAME]`` keys and how each is checked (the
#: options stay strings; the collector reads them).
_COLLECTOR_KEYS: dict[str, dict[str, _Parser]] = {
    "GuestQemuAgent": {
        "timeout": _seconds,
        "socket_path": lambda w, r: _required_path(w, r),
        "socket_name_template": _socket_name_template,
    },
}


def _new_parser() -> configparser.ConfigParser:
    return configparser.ConfigParser(
        interpolation=None,
        strict=False,               # duplicates: the last one wins, as in MoM
        default_section=_NO_DEFAULT_SECTION,
        inline_comment_prefixes=(";",),
    )


def _hypervisor_interface(raw: str) -> None:
    value = raw.strip()
    if value.lower() in ("", "libvirt"):
        _logger.warning("[main] hypervisor-interface: mom always uses "
                        "libvirt; key ignored")
        return
    raise ConfigError(
        f"[main] hypervisor-interface: only 'libvirt' is supported "
        f"(mom does not talk to vdsm), got {raw!r}")


def _from_parser(parser: configparser.ConfigParser,
                 source: Path | None) -> Config:
    values: dict[str, object] = {}
    collector_options: dict[str, dict[str, str]] = {}
    for section in parser.sections():
        match = _COLLECTOR_SECTION.match(section)
        if section in _KEYS:
            known = _KEYS[section]
            for key, raw in parser.items(section, raw=True):
                where = f"[{section}] {key}"
                if key in known:
                    attribute, parse = known[key]
                    values[attribute] = parse(where, raw)
                elif section == "main" and key == "hypervisor-interface":
                    _hypervisor_interface(raw)
                elif section == "main" and key in _IGNORED_MAIN_KEYS:
                    _logger.warning("%s: not implemented by mom, ignored",
                                    where)
                else:
                    _logger.warning("%s: unknown key, ignored", where)
        elif match:
            name = match.group(1)
            canonical = _ALL_COLLECTORS.get(name.lower())
            canonical = COLLECTOR_ALIASES.get(canonical, canonical)
            if canonical is None:
                _logger.warning("[%s]: options for an unknown collector %r, "
                                "ignored", section, name)
                continue
            options = collector_options.setdefault(canonical, {})
            known_keys = _COLLECTOR_KEYS.get(canonical)
            for key, raw in parser.items(section, raw=True):
                if known_keys is not None:
                    if key in known_keys:
                        known_keys[key](f"[{section}] {key}", raw)
                    else:
                        _logger.warning("[%s] %s: unknown key, ignored", section, key)
                        continue
                options[key] = raw
        else:
            hint = ""
            if section.lower() in _KEYS:
                hint = (f" (section names are case-sensitive: "
                        f"did you mean [{section.lower()}]?)")
            _logger.warning("[%s]: unknown section, ignored%s", section, hint)

    if values.get("policy_file") and values.get("policy_dir"):
        raise ConfigError(
            "[main] policy, policy-dir: only one of 'policy' and 'policy-dir' "
            f"may be set, got policy={str(values['policy_file'])!r} and "
            f"policy-dir={str(values['policy_dir'])!r}")
    return Config(**values, collector_options=collector_options,
                  source=source)


def config_from_string(text: str, *, source: Path | None = None) -> Config:
    """The configuration written in ``text`` (INI, as in a ``momd.conf``)."""
    parser = _new_parser()
    name = str(source) if source is not None else "<string>"
    try:
        parser.read_string(text, source=name)
    except configparser.Error as exc:
        raise ConfigError(f"{name}: not a valid INI file: {exc}") from None
    return _from_parser(parser, source)


def load_config(path: Path | None, *, explicit: bool) -> Config:
    """Read a ``momd.conf``.

    ``path`` None means :data:`DEFAULT_CONFIG_FILE`.  ``explicit`` says the
    user named the file (``-c``): then a missing file is an error; a missing
    file at the default location only means "all defaults".
    """
    path = DEFAULT_CONFIG_FILE if path is None else Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if explicit:
            raise ConfigError(
                f"{path}: configuration file not found") from None
        _logger.info("No configuration file at %s; using the defaults", path)
        return Config.defaults()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"{path}: cannot read the configuration file: {exc}") from None
    return config_from_string(text, source=path)


# --------------------------------------------------------------------------
# The command line


def apply_overrides(config: Config, *,
                    rules_file: str | Path | None = None,
                    policy_dir: str | Path | None = None,
                    log: str | None = None,
                    verbosity: str | int | None = None,
                    dry_run: bool | None = None,
                    metrics_file: str | Path | None = None) -> Config:
    """``config`` with momd's command-line settings applied (None: not given).

    The command line wins over the file.  ``rules_file`` (``-r``) replaces
    any ``policy``/``policy-dir`` of the file, and so does ``policy_dir``
    (``-P``); giving both is an error.  ``verbosity`` takes the same values
    as ``[logging] verbosity``.  ``metrics_file`` empty turns off a
    metrics file the configuration file names.
    """
    changes: dict[str, object] = {}
    if rules_file is not None and policy_dir is not None:
        raise ConfigError("--rules-file, --policy-dir: only one of them may "
                          f"be given, got {str(rules_file)!r} and "
                          f"{str(policy_dir)!r}")
    if rules_file is not None:
        changes["policy_file"] = _required_path(
            "--rules-file", str(rules_file), "a file path")
        changes["policy_dir"] = None
    if policy_dir is not None:
        changes["policy_dir"] = _required_path("--policy-dir", str(policy_dir))
        changes["policy_file"] = None
    if log is not None:
        changes["log"] = _log_target("--log", log)
    if verbosity is not None:
        changes["verbosity"] = parse_verbosity("--verbosity", verbosity)
    if dry_run is not None:
        changes["dry_run"] = bool(dry_run)
    if metrics_file is not None:
        changes["metrics_file"] = _optional_path(str(metrics_file))
    return dataclasses.replace(config, **changes)


@dataclass(frozen=True)
class CommandLine:
    """What momd's command line gave; None: an option not given, so that
    :func:`config_from_args` can tell the default configuration file from
    an explicit one, and a file's setting from a command-line one."""

    config_file: Path | None = None
    rules_file: str | None = None
    policy_dir: str | None = None
    log: str | None = None
    verbosity: str | None = None
    dry_run: bool | None = None
    metrics_file: str | None = None
    #: ``-h``/``--help``: print :func:`command_line_help` instead of running.
    help: bool = False


#: momd's options: short letter ("" for none), long name, what its value
#: is called (None: a flag, which sets True), the CommandLine field, help.
_OPTIONS: tuple[tuple[str, str, str | None, str, str], ...] = (
    ("h", "help", None, "help", "show this help and exit"),
    ("c", "config-file", "FILE", "config_file",
     f"read the configuration from FILE (default: {DEFAULT_CONFIG_FILE})"),
    ("r", "rules-file", "FILE", "rules_file",
     "use the single policy in FILE (replaces the file's policy/policy-dir)"),
    ("P", "policy-dir", "DIR", "policy_dir",
     "use the policies in DIR (replaces the file's policy/policy-dir)"),
    ("l", "log", "FILE|stdio", "log", "log to FILE, or to standard error with 'stdio'"),
    ("v", "verbosity", "LEVEL", "verbosity",
     "debug, info, warning, error, critical, or 1 (critical) to 5 (debug)"),
    ("", "dry-run", None, "dry_run", "decide, but change nothing on the host"),
    ("", "metrics-file", "FILE", "metrics_file",
     "write Prometheus metrics to FILE after every collection, for node_exporter's "
     "textfile collector (replaces the file's metrics-file; empty: none)"),
)


def parse_command_line(argv: Sequence[str]) -> CommandLine:
    """momd's options in ``argv`` (the arguments after the program's name).

    GNU style, as getopt reads it: ``-c FILE``, ``-cFILE``, ``--config-file
    FILE``, ``--config-file=FILE`` or an unambiguous abbreviation such as
    ``--conf``; the last of a repeated option wins.  ConfigError for an
    unknown option, a missing value or an argument that is no option.
    (Not argparse: momd would keep it loaded for good, some 0.6 MB of its
    resident size, for a few options read once.)
    """
    shorts = "".join(short + (":" if value else "") for short, _, value, _, _ in _OPTIONS)
    longs = [name + ("=" if value else "") for _, name, value, _, _ in _OPTIONS]
    try:
        given, rest = getopt.gnu_getopt(list(argv), shorts, longs)
    except getopt.GetoptError as e:
        raise ConfigError(f"{e.msg} (momd --help lists the options)") from None
    if rest:
        raise ConfigError(f"unexpected argument {rest[0]!r}: momd takes options only "
                          "(momd --help lists them)")
    meaning = {f"--{name}": (attribute, value) for _, name, value, attribute, _ in _OPTIONS}
    meaning.update({f"-{short}": (attribute, value)
                    for short, _, value, attribute, _ in _OPTIONS if short})
    values: dict[str, object] = {}
    for option, text in given:
        attribute, value = meaning[option]
        values[attribute] = text if value else True
    if "config_file" in values:
        values["config_file"] = Path(str(values["config_file"]))
    return CommandLine(**values)  # type: ignore[arg-type]


def command_line_help() -> str:
    """What ``momd --help`` prints (help2man makes momd's manual page of it)."""
    lines = ["Usage: momd [OPTION]...",
             "mom: memory overcommitment manager for KVM hosts", "", "Options:"]
    for short, name, value, _, text in _OPTIONS:
        option = (f"-{short}, " if short else "    ") + f"--{name}" + (f"={value}" if value else "")
        wrapped = textwrap.wrap(text, 52)
        if len(option) > 24:
            lines.append(f"  {option}")
        else:
            lines.append(f"  {option:<24} {wrapped.pop(0)}")
        lines.extend(f"{'':27}{line}" for line in wrapped)
    return "\n".join(lines) + "\n"


def config_from_args(args: CommandLine) -> Config:
    """The configuration for parsed momd arguments: the file, then the
    command line over it."""
    config = load_config(args.config_file,
                         explicit=args.config_file is not None)
    return apply_overrides(config, rules_file=args.rules_file,
                           policy_dir=args.policy_dir, log=args.log,
                           verbosity=args.verbosity, dry_run=args.dry_run,
                           metrics_file=args.metrics_file)


__all__ = [
    "CommandLine", "Config", "ConfigError", "DEFAULT_CONFIG_FILE", "ETC_POLICY_DIR",
    "apply_overrides", "command_line_help", "config_from_args", "parse_command_line",
    "config_from_string", "load_config", "parse_bool", "parse_verbosity",
    "shipped_policy_dir",
]
