"""A guest's disks on the bus: IoTune and IoTuneCurrent (aa{sv}), the records in
Statistics and the io_tune control in Controls and ControlsApplied, marshalled
by wire.py exactly as dbus-next would, and read back as plain dictionaries."""

from __future__ import annotations

from types import SimpleNamespace

from dbus_next import Variant
from dbus_next._private.marshaller import Marshaller

from momservice.bus.interfaces import GuestInterface, applied_controls
from momservice.bus.published import coerce, to_variants
from momservice.bus.wire import marshal_body
from momservice.cli.bus_client import unwrap
from momservice.cli.bus_commands import guest_detail_lines
from momservice.policy.iotune_value import DiskIoTune, IoLimits, IoTuneDevice

MIB = 1048576
VDA = IoTuneDevice("vda", "/images/a.raw", IoLimits({"total_bytes_sec": MIB}),
                   IoLimits({"total_bytes_sec": 10 * MIB, "total_iops_sec": 200}),
                   IoLimits({"read_iops_sec": 7}))
SAMPLE = {"balloon_cur": 5, "io_tune": [VDA],
          "io_tune_current": [DiskIoTune("vda", "/images/a.raw", VDA.current),
                              DiskIoTune("hdc", None, IoLimits())]}


def _theirs(signature: str, body: list) -> bytes:
    m = Marshaller(signature, body)
    m.marshall()
    return bytes(m.buffer)


def test_the_properties_are_typed_from_the_catalogue():
    props = {p.name: p for p in GuestInterface.PROPERTIES}
    assert props["IoTune"].signature == props["IoTuneCurrent"].signature == "aa{sv}"
    assert "policy name io_tune)" in props["IoTune"].doc


def test_disks_marshal_as_dbus_next_would_and_read_back_plain():
    io_tune = coerce("aa{sv}", SAMPLE["io_tune"])
    current = coerce("aa{sv}", SAMPLE["io_tune_current"])
    statistics = to_variants(SAMPLE)
    controls = to_variants({"io_tune": [{"name": "vda", "path": "", "total_iops_sec": 200}]})
    body = [{"IoTune": Variant("aa{sv}", io_tune), "IoTuneCurrent": Variant("aa{sv}", current),
             "Statistics": Variant("a{sv}", statistics),
             "Controls": Variant("a{sv}", controls)}]
    assert bytes(marshal_body("a{sv}", body)) == _theirs("a{sv}", body)
    plain = unwrap(body[0])
    assert plain["IoTune"] == [{"name": "vda", "path": "/images/a.raw",
                                "guaranteed": VDA.guaranteed.plain(),
                                "maximum": VDA.maximum.plain(), "current": VDA.current.plain()}]
    assert plain["IoTuneCurrent"][1] == {"name": "hdc", "path": "", **IoLimits().plain()}
    assert plain["Statistics"]["io_tune"] == plain["IoTune"]
    assert plain["Controls"]["io_tune"] == [{"name": "vda", "path": "", "total_iops_sec": 200}]
    assert coerce("aa{sv}", None) == []


def test_controls_applied_carries_the_disks_set():
    evaluation = SimpleNamespace(applied_ksm={}, applied_balloons={"u-1": 5},
                                 applied={"IoTune": {"u-1": [{"name": "vda", "read_iops_sec": 0}],
                                                     "u-2": [{"name": "vdb", "read_iops_sec": 3}]}})
    signal = applied_controls(evaluation)
    assert unwrap(signal["/org/ovirt/mom1/guest/u_1"]) == {
        "balloon_target": 5, "io_tune": [{"name": "vda", "read_iops_sec": 0}]}
    assert bytes(marshal_body("a{oa{sv}}", [signal])) == _theirs("a{oa{sv}}", [signal])


def test_momctl_guest_shows_each_disk_readably():
    props = unwrap({"Name": Variant("s", "web"), "IoTune": Variant("aa{sv}", coerce(
        "aa{sv}", SAMPLE["io_tune"])), "IoTuneCurrent": Variant("aa{sv}", coerce(
            "aa{sv}", SAMPLE["io_tune_current"])), "Controls": Variant("a{sv}", to_variants(
                {"io_tune": [{"name": "vda", "path": "", "total_iops_sec": 200}]}))})
    text = "\n".join(guest_detail_lines("/org/ovirt/mom1/guest/u", props))
    assert """  IoTune:
    vda /images/a.raw
      guaranteed  total 1.0 MiB/s
      maximum     total 10.0 MiB/s, total 200 IOPS
      current     read 7 IOPS
  IoTuneCurrent:
    vda /images/a.raw: read 7 IOPS
    hdc: unlimited""" in text
    assert "  io_tune:\n    vda: total 200 IOPS" in text
