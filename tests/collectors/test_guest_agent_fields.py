"""GuestQemuAgent's fields from a guest's /proc/meminfo and /proc/vmstat texts.

The texts are this host's own files (a real kernel's), plus garbled ones.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from momservice.collectors import CollectionError
from momservice.collectors.guest import GUEST_MEMORY
from momservice.collectors.guest_agent import GUEST_QEMU_AGENT, PAGE_KIB, agent_fields
from momservice.collectors.meminfo import parse_meminfo, parse_vmstat
from momservice.collectors.registry import GUEST_COLLECTORS


def test_fields_of_a_real_kernel_mean_what_the_balloon_reports():
    meminfo_text = Path("/proc/meminfo").read_text()
    vmstat_text = Path("/proc/vmstat").read_text()
    fields = agent_fields(meminfo_text, vmstat_text)
    meminfo, vmstat = parse_meminfo(meminfo_text), parse_vmstat(vmstat_text)
    assert fields["mem_available"] == meminfo["MemTotal"]
    # Read a moment apart, MemFree may differ a little; its order of size not.
    assert 0 < fields["mem_unused"] <= meminfo["MemTotal"]
    assert 0 < fields["mem_usable"] <= meminfo["MemTotal"]
    assert fields["disk_caches"] >= meminfo["Buffers"]
    assert fields["swap_total"] == meminfo["SwapTotal"]
    assert 0 <= fields["swap_usage"] <= meminfo["SwapTotal"]
    assert fields["swap_in"] % PAGE_KIB == 0 and fields["swap_out"] % PAGE_KIB == 0
    assert fields["minor_fault"] == vmstat["pgfault"] >= fields["major_fault"]
    assert fields["major_fault"] == vmstat["pgmajfault"]
    assert fields["swap_in"] == vmstat["pswpin"] * PAGE_KIB
    assert set(fields) <= GUEST_QEMU_AGENT.fields


def test_exact_mapping():
    meminfo = ("MemTotal: 1000 kB\nMemFree: 300 kB\nMemAvailable: 600 kB\nBuffers: 10 kB\n"
               "Cached: 200 kB\nSwapCached: 5 kB\nSwapTotal: 512 kB\nSwapFree: 500 kB\n")
    vmstat = "pgfault 70\npgmajfault 7\npswpin 3\npswpout 4\nnr_free_pages 75\n"
    assert agent_fields(meminfo, vmstat) == {
        "mem_available": 1000, "mem_unused": 300, "mem_usable": 600, "disk_caches": 215,
        "swap_total": 512, "swap_usage": 12, "swap_in": 3 * PAGE_KIB, "swap_out": 4 * PAGE_KIB,
        "major_fault": 7, "minor_fault": 70}


def test_an_old_kernel_without_memavailable_leaves_mem_usable_out():
    meminfo = "MemTotal: 1000 kB\nMemFree: 300 kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n"
    fields = agent_fields(meminfo, "pgfault 1\npgmajfault 0\npswpin 0\npswpout 0\n")
    assert "mem_usable" not in fields and "disk_caches" not in fields
    assert fields["mem_unused"] == 300


@pytest.mark.parametrize("meminfo, vmstat, missing", [
    ("MemTotal: 1000 kB\n", "pgfault 1\npgmajfault 0\npswpin 0\npswpout 0\n", "MemFree"),
    ("MemTotal: 1 kB\nMemFree: 1 kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n", "pgfault x\n",
     "pgfault"),
    ("", "", "MemTotal"),
])
def test_missing_lines_are_a_collection_error(meminfo, vmstat, missing):
    with pytest.raises(CollectionError, match=missing):
        agent_fields(meminfo, vmstat)


def test_registered_with_the_balloon_statistics_fields():
    assert GUEST_COLLECTORS["GuestQemuAgent"] is GUEST_QEMU_AGENT
    assert GUEST_QEMU_AGENT.fields == GUEST_MEMORY.fields
