"""momctl policy test with a guest's disks: the vdsm-style IoTune policy tried
offline on the JSON that ``momctl guest --json`` shows (IoTune's dictionaries)."""

from __future__ import annotations

import json
from pathlib import Path

from momservice.cli import exitcodes
from momservice.cli.momctl import main

VDSM_STYLE = Path(__file__).resolve().parents[2] / "benchmarks" / "policies" / "vdsm-style"
GUEST = {"name": "web", "io_tune": [{"name": "vda", "path": "/images/web.raw",
                                     "guaranteed": {"total_bytes_sec": 1048576},
                                     "maximum": {"total_bytes_sec": 10485760},
                                     "current": {}}]}


def _momctl(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_iotune_policy_runs_offline_on_a_guests_disks(capsys):
    files = [str(VDSM_STYLE / "01-parameters.policy"), str(VDSM_STYLE / "05-iotune.policy")]
    code, out, err = _momctl(capsys, "policy", "test", "--host", "{}", "--guest",
                             json.dumps(GUEST), "--param", "ioTuneEnabled=1", *files)
    assert code == exitcodes.OK, err
    (controls,) = json.loads(out)["guests"]
    assert controls == {"io_tune": [{"name": "vda", "path": "/images/web.raw",
                                     "total_bytes_sec": 10485760, "read_bytes_sec": 0,
                                     "write_bytes_sec": 0, "total_iops_sec": 0,
                                     "read_iops_sec": 0, "write_iops_sec": 0}]}


def test_a_disk_without_a_name_is_a_usage_error(capsys):
    code, _, err = _momctl(capsys, "policy", "test", "--host", "{}", "--guest",
                           '{"io_tune": [{"path": "/x"}]}',
                           str(VDSM_STYLE / "05-iotune.policy"))
    assert code == exitcodes.INVALID_ARGUMENT and "each disk needs a name" in err
