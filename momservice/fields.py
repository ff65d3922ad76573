"""The vocabulary of statistics and controls, as policies name them: the field catalogue.

These are MoM's names, so MoM policies run unchanged.  Collectors produce
these fields, the policy engine reads them, the D-Bus layer publishes them.
Each field is one row of the catalogue: its policy name, the D-Bus
property that publishes it (if any), that property's type, its unit and
what it means.  The bus properties and their doc strings
(``bus/interfaces.py``) and momctl's columns and units (``cli/``) are made
from these rows; the name sets below are too.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Unit:
    """How a field is measured: the word doc strings use, the symbol momctl prints."""

    word: str
    symbol: str


KIB = Unit("KiB", "KiB")
PAGES = Unit("pages", "pages")
MILLISECONDS = Unit("ms", "ms")
PERCENT = Unit("percent", "%")
SECONDS = Unit("seconds", "s")
MICROSECONDS = Unit("microseconds", "us")


@dataclass(frozen=True)
class Field:
    """One statistic, control or guest property of the catalogue.

    ``prop`` is the D-Bus property publishing it (None: only in the
    ``Statistics`` dictionary), ``signature`` that property's type;
    ``states`` names the values 0, 1, ... of an enumeration; ``label`` is
    momctl's column heading for it, where ``momctl guests`` has a column;
    an ``optional`` guest statistic may be missing from a complete sample;
    a property that is not ``signalled`` changes without PropertiesChanged
    (clients read it when they need it).
    """

    name: str
    prop: str | None
    signature: str
    unit: Unit | None
    doc: str
    states: tuple[str, ...] = ()
    label: str = ""
    optional: bool = False
    signalled: bool = True

    def description(self) -> str:
        """What it means, with its unit and the names of its values."""
        text = self.doc
        if self.states:
            text += ": " + ", ".join(f"{i} {state}" for i, state in enumerate(self.states))
        return f"{text}, {self.unit.word}" if self.unit else text

    def state(self, value: object) -> str | None:
        """The name of an enumeration's value, None if it has none."""
        if isinstance(value, int) and 0 <= value < len(self.states):
            return self.states[value]
        return None


# -- the host ------------------------------------------------------------------------

HOST_MEMORY: tuple[Field, ...] = (
    Field("mem_available", "MemTotal", "t", KIB, "Total memory"),
    Field("mem_free", "MemFree", "t", KIB, "Free memory plus buffers and page cache"),
    Field("mem_unused", "MemUnused", "t", KIB, "Memory not used at all"),
    Field("anon_pages", "AnonPages", "t", KIB, "Anonymous memory"),
    Field("cpu_count", "CpuCount", "u", None, "Online CPUs"),
)
HOST_SWAP: tuple[Field, ...] = (
    Field("swap_total", "SwapTotal", "t", KIB, "Swap space"),
    Field("swap_usage", "SwapUsed", "t", KIB, "Swap in use"),
    Field("swap_in", "SwapIn", "t", PAGES, "Swapped in since the previous sample"),
    Field("swap_out", "SwapOut", "t", PAGES, "Swapped out since the previous sample"),
)
HOST_PRESSURE: tuple[Field, ...] = (
    Field("mem_pressure_some", "MemoryPressureSome", "d", PERCENT,
          "PSI memory pressure (some, avg10)"),
    Field("mem_pressure_full", "MemoryPressureFull", "d", PERCENT,
          "PSI memory pressure (full, avg10)"),
)
HOST_KSM: tuple[Field, ...] = (
    Field("ksm_run", "KsmRun", "u", None, "KSM run state",
          states=("stopped", "running", "unmerging")),
    Field("ksm_pages_to_scan", "KsmPagesToScan", "u", None, "KSM pages to scan per batch"),
    Field("ksm_sleep_millisecs", "KsmSleepMillisecs", "u", MILLISECONDS,
          "KSM pause between batches"),
    Field("ksm_merge_across_nodes", "KsmMergeAcrossNodes", "u", None,
          "Whether KSM merges across NUMA nodes"),
    Field("ksm_pages_shared", "KsmPagesShared", "t", None, "KSM shared pages"),
    Field("ksm_pages_sharing", "KsmPagesSharing", "t", None, "Pages sharing KSM pages"),
    Field("ksm_pages_unshared", "KsmPagesUnshared", "t", None, "Pages KSM could not share"),
    Field("ksm_pages_volatile", "KsmPagesVolatile", "t", None,
          "Pages changing too fast to share"),
    Field("ksm_full_scans", "KsmFullScans", "t", None, "Full KSM scans so far"),
    Field("ksm_shareable", "KsmShareable", "t", KIB, "Guest memory KSM could merge"),
    Field("ksmd_cpu_usage", "KsmdCpuUsage", "d", PERCENT, "CPU used by ksmd"),
)
# The host's local wall clock (HostTime), for time-of-day policies.  Only in
# the Statistics dictionary, not typed Host properties, and no reason for a
# PropertiesChanged: they change at every sample, so the host object would
# signal every second for nothing, and a client wanting the time has its own.
HOST_TIME: tuple[Field, ...] = tuple(
    Field(name, None, "u", None, doc, signalled=False) for name, doc in (
        ("time_year", "Local year of the host's clock"),
        ("time_month", "Local month of the host's clock, 1-12"),
        ("time_day", "Local day of the month of the host's clock, 1-31"),
        ("time_hour", "Local hour of the host's clock, 0-23"),
        ("time_minute", "Minute of the host's clock, 0-59"),
        ("time_second", "Second of the host's clock, 0-59"),
        ("time_microsecond", "Microsecond of the host's clock, 0-999999"),
    ))
#: Every statistic a host sample may carry (each a typed Host property, but
#: the clock's).
HOST_STATISTICS: tuple[Field, ...] = (HOST_MEMORY + HOST_SWAP + HOST_PRESSURE + HOST_KSM
                                      + HOST_TIME)

# -- guests --------------------------------------------------------------------------

#: The guest's identity, also its fixed properties for policies.
GUEST_IDENTITY: tuple[Field, ...] = (
    Field("name", "Name", "s", None, "The guest's name", label="NAME"),
    Field("uuid", "UUID", "s", None, "The guest's UUID"),
    Field("pid", "Pid", "u", None, "The QEMU process id; 0 if unknown"),
)
#: MemTune's cgroup limits on the guest's QEMU process (libvirt's <memtune>),
#: also the names of MemTune's controls: nil in policies while unlimited,
#: 0 on the bus (SetMemTune's "unlimited" too).
MEMTUNE_LIMITS: tuple[Field, ...] = (
    Field("mem_soft_limit", "MemSoftLimit", "t", KIB,
          "Soft memory limit of the QEMU process (cgroup v1 memory.soft_limit_in_bytes, "
          "v2 memory.high), 0 when unlimited", optional=True),
    Field("mem_hard_limit", "MemHardLimit", "t", KIB,
          "Hard memory limit of the QEMU process, 0 when unlimited", optional=True),
    Field("mem_swap_hard_limit", "MemSwapHardLimit", "t", KIB,
          "Memory plus swap limit of the QEMU process, 0 when unlimited", optional=True),
)
#: A guest's virtio-mem device (collector GuestVirtioMem): absent without one.
VIRTIO_MEM: tuple[Field, ...] = (
    Field("virtio_mem_max", "VirtioMemMaximum", "t", KIB,
          "Size of the guest's virtio-mem device (0 without one)", optional=True),
    Field("virtio_mem_block", "VirtioMemBlock", "t", KIB,
          "Block size of the guest's virtio-mem device (0 without one)", optional=True),
    Field("virtio_mem_requested", "VirtioMemRequested", "t", KIB,
          "Memory the host asks the guest's virtio-mem device to plug (0 without one; "
          "also the VirtioMem control)", optional=True),
    Field("virtio_mem_current", "VirtioMemCurrent", "t", KIB,
          "Memory the guest's virtio-mem device has plugged (0 without one)", optional=True),
)
#: GuestCpuTune: the CFS bandwidth of the guest's vCPUs (libvirt's
#: ``<cputune>``), the limit its manager asked for, and its vCPUs.
GUEST_CPU_TUNE: tuple[Field, ...] = (
    Field("vcpu_quota", "VcpuQuota", "x", MICROSECONDS,
          "CPU time each vCPU may use per period; -1 unlimited, 0 unknown",
          optional=True),
    Field("vcpu_period", "VcpuPeriod", "t", MICROSECONDS,
          "Period of the vCPU quota; 0 unknown", optional=True),
    Field("vcpu_user_limit", "VcpuUserLimit", "u", PERCENT,
          "CPU limit set for the guest (metadata vcpuLimit of "
          "http://ovirt.org/vm/tune/1.0; 100 when none)", optional=True),
    Field("vcpu_count", "VcpuCount", "u", None, "vCPUs of the guest", optional=True),
)
#: Guest statistics, in the order ``momctl guest`` lists them.  A guest is in
#: ``Guests`` once its sample has every statistic that is not ``optional``;
#: an absent optional one reads as nil.
GUEST_STATISTICS: tuple[Field, ...] = (
    Field("balloon_cur", "BalloonCurrent", "t", KIB, "Memory the balloon leaves the guest",
          label="CURRENT"),
    Field("balloon_max", "BalloonMaximum", "t", KIB, "Maximum memory of the guest",
          label="MAX"),
    Field("balloon_min", "BalloonMinimum", "t", KIB, "Guaranteed memory", label="MIN"),
    Field("mem_available", "MemAvailable", "t", KIB, "Memory the guest sees"),
    Field("mem_unused", "MemUnused", "t", KIB, "Memory the guest leaves unused", label="FREE"),
    Field("mem_usable", "MemUsable", "t", KIB, "Memory the guest could use without swapping",
          optional=True),
    Field("disk_caches", "DiskCaches", "t", KIB, "The guest's disk caches", optional=True),
    Field("rss", "Rss", "t", KIB, "Resident memory of the QEMU process", optional=True),
    *MEMTUNE_LIMITS,
    # momctl's SWAP IN/OUT column shows both.
    Field("swap_in", "SwapIn", "t", KIB, "Swapped in by the guest", label="SWAP IN/OUT"),
    Field("swap_out", "SwapOut", "t", KIB, "Swapped out by the guest"),
    Field("swap_total", None, "t", KIB, "Swap space of the guest", optional=True),
    Field("swap_usage", None, "t", KIB, "Swap the guest uses", optional=True),
    Field("major_fault", "MajorFaults", "t", None, "Major page faults in the guest"),
    Field("minor_fault", "MinorFaults", "t", None, "Minor page faults in the guest"),
    Field("host_major_faults", None, "t", None, "Major page faults of the QEMU process",
          optional=True),
    Field("host_minor_faults", None, "t", None, "Minor page faults of the QEMU process",
          optional=True),
    # It moves every second of every guest: signalling it would make each
    # guest emit PropertiesChanged every cycle, whether anything changed or not.
    Field("stats_age", "StatsAge", "d", SECONDS, "Time since the guest last reported",
          optional=True, signalled=False),
    # From <memballoon>: what the balloon does without being asked.
    Field("balloon_autodeflate", "BalloonAutodeflate", "u", None,
          "Whether the guest deflates its balloon itself when out of memory (deflate-on-oom)",
          states=("off", "on"), optional=True),
    Field("balloon_free_page_reporting", "BalloonFreePageReporting", "u", None,
          "Whether the guest returns the pages it frees to the host itself "
          "(free page reporting)", states=("off", "on"), optional=True),
    # IoTune (docs/mechanisms/iotune.md): lists of disks, each a dictionary.
    Field("io_tune", "IoTune", "aa{sv}", None,
          "Disks with I/O limits in the guest's metadata: name, path, and the guaranteed, "
          "maximum and current limits (total/read/write bytes and operations per second, "
          "0 unlimited)", optional=True),
    Field("io_tune_current", "IoTuneCurrent", "aa{sv}", None,
          "Every disk of the guest with its current I/O limits: name, path, "
          "total/read/write bytes and operations per second (0 unlimited)", optional=True),
    *VIRTIO_MEM,
    *GUEST_CPU_TUNE,
)
BALLOON_TARGET = Field("balloon_target", "BalloonTarget", "t", KIB,
                       "Balloon target last applied (0 if none)", label="TARGET")
#: CpuTune's controls: the statistics of the same names show what applies.
CPU_TUNE_CONTROLS: tuple[Field, ...] = (
    Field("vcpu_quota", None, "x", MICROSECONDS,
          "vCPU quota to apply: -1 (unlimited) or 1000..17592186044415"),
    Field("vcpu_period", None, "t", MICROSECONDS, "vCPU period to apply: 1000..1000000"),
)
#: Controls a policy may request for a guest.
GUEST_CONTROL_FIELDS: tuple[Field, ...] = (BALLOON_TARGET,) + CPU_TUNE_CONTROLS
#: Every row about guests, in the order ``momctl guest`` lists their properties
#: (the balloon target right after the balloon's three sizes).
GUEST_CATALOGUE: tuple[Field, ...] = (GUEST_IDENTITY + GUEST_STATISTICS[:3]
                                      + GUEST_CONTROL_FIELDS + GUEST_STATISTICS[3:])

# -- the name sets -------------------------------------------------------------------

#: Every statistic a host sample may carry.
HOST_FIELDS: frozenset[str] = frozenset(f.name for f in HOST_STATISTICS)
#: Guest statistics that must all be present for a guest to be in ``Guests``.
GUEST_REQUIRED_FIELDS: frozenset[str] = frozenset(f.name for f in GUEST_STATISTICS
                                                  if not f.optional)
#: Guest statistics a guest may lack; an absent one reads as nil.
GUEST_OPTIONAL_FIELDS: frozenset[str] = frozenset(f.name for f in GUEST_STATISTICS if f.optional)
GUEST_FIELDS: frozenset[str] = GUEST_REQUIRED_FIELDS | GUEST_OPTIONAL_FIELDS

#: Fixed properties of a guest, read with ``(guest.Prop "NAME")``.
GUEST_PROPERTIES: tuple[str, ...] = tuple(f.name for f in GUEST_IDENTITY)

#: Fields whose changes alone are no reason for a PropertiesChanged.
UNSIGNALLED_FIELDS: frozenset[str] = frozenset(
    f.name for f in HOST_STATISTICS + GUEST_CATALOGUE if not f.signalled)

#: The rows by D-Bus property, as momctl reads them.
HOST_BY_PROPERTY: dict[str, Field] = {f.prop: f for f in HOST_STATISTICS if f.prop}
GUEST_BY_PROPERTY: dict[str, Field] = {f.prop: f for f in GUEST_CATALOGUE if f.prop}
