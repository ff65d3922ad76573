"""``momctl explain`` and ``momctl history`` against momd on sim:// (a real
private bus, momd as a process): the story of each balloon step, with the
policy file and line that set it and the inputs it read."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tomllib

import pytest

from momservice.contract import GUEST_INTERFACE, INTROSPECTABLE_INTERFACE
from momservice.cli.bus_client import MomClient
from tests.helpers.momd_process import REPO, Momd, momctl, momd_config
from tests.helpers.private_bus import skip_reason, system_bus_with_polkit

URI = "sim:///?guests=3&seed=2&host_mib=6144"
#: Shrinks sim-guest-02 by 64 MiB from its line 4, at every evaluation.
SHRINK = """# shrinks one guest, for the test
(with Guests guest
  (if (== (guest.Prop "name") "sim-guest-02")
      (guest.Control "balloon_target" (- guest.balloon_cur 65536))
      nil))
"""

_reason = skip_reason(polkit=False)
pytestmark = [pytest.mark.skipif(_reason is not None, reason=_reason or ""),
              pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """momd on sim://, evaluating at start and when asked only, with SHRINK alone."""
    tmp = tmp_path_factory.mktemp("explain")
    policies = tmp / "given"
    policies.mkdir()
    (policies / "50-shrink.policy").write_text(SHRINK)
    config = momd_config(tmp, URI, engine_interval=3600, policies=policies)
    with system_bus_with_polkit(tmp / "bus", polkit=False) as system:
        momd = Momd(system, config, tmp / "momd.log")
        try:
            yield system, momd, tmp
        finally:
            momd.stop()
        assert "Traceback" not in momd.log_text()


def run_json(system, *args: str):
    result = momctl(system, *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def bus_call(system, path: str, interface: str, member: str, signature: str, body: list):
    async def go():
        client = await MomClient.connect(system.address)
        try:
            return await client.call(path, interface, member, signature, body)
        finally:
            client.close()
    return asyncio.run(go())


def test_explain_tells_each_step_with_its_policy_line_and_inputs(service):
    system, momd, tmp = service
    # One step at start, one more asked for now.
    assert momctl(system, "evaluate").returncode == 0
    story = run_json(system, "explain", "sim-guest-02", "--since", "1h")
    records = story["records"]
    assert len(records) == 2
    policy_file = tmp / "policies" / "50-shrink.policy"   # the copy momd reads
    for record in records:
        (change,) = record["changes"]
        assert change["control"] == "balloon_target"
        assert change["to"] == change["from"] - 65536
        assert (change["policy"], change["line"], change["file"]) == \
            ("50-shrink", 4, str(policy_file))
        assert record["inputs"]["guest"]["balloon_cur"] == change["from"]
        assert record["inputs"]["host"] == {}   # the policy reads nothing of the host
        assert record["dry_run"] is False
    assert [r["reason"] for r in records] == ["start", "request"]
    # The second step starts where the balloon stood after the first.
    assert records[1]["changes"][0]["from"] <= records[0]["changes"][0]["from"]
    guest = run_json(system, "guest", "sim-guest-02")
    assert guest["BalloonTarget"] == records[-1]["changes"][0]["to"]

    text = momctl(system, "explain", "sim-guest-02")
    assert text.returncode == 0, text.stderr
    assert "sim-guest-02 (" in text.stdout and "2 controls applied" in text.stdout
    assert "(-64.0 MiB)" in text.stdout
    assert f"in policy 50-shrink at {policy_file}:4" in text.stdout
    assert "guest: balloon_cur " in text.stdout

    # Over the bus: since the first record, only the second one.
    (raw,) = bus_call(system, story["path"], GUEST_INTERFACE, "Explain", "t",
                      [records[1]["time_usec"]])
    assert json.loads(raw) == records[1:]


def test_a_guest_nothing_was_applied_to_says_so(service):
    system, _, _ = service
    result = momctl(system, "explain", "sim-guest-01", "--since", "2d")
    assert result.returncode == 0, result.stderr
    assert "sim-guest-01 (" in result.stdout
    assert "no control applied in the last" in result.stdout
    assert run_json(system, "explain", "sim-guest-01")["records"] == []


def test_explain_refuses_what_it_cannot_answer(service):
    system, _, _ = service
    unknown = momctl(system, "explain", "no-such-guest")
    assert unknown.returncode == 5 and "no guest named 'no-such-guest'" in unknown.stderr
    bad = momctl(system, "explain", "sim-guest-02", "--since", "yesterday")
    assert bad.returncode == 2 and "invalid duration" in bad.stderr


def test_the_introspection_says_what_explain_returns(service):
    system, _, _ = service
    path = run_json(system, "explain", "sim-guest-02")["path"]
    (xml,) = bus_call(system, path, INTROSPECTABLE_INTERFACE, "Introspect", "", [])
    explain = xml[xml.index('<method name="Explain">'):]
    explain = explain[:explain.index("</method>")]
    assert 'type="t"' in explain and 'type="s"' in explain
    assert "JSON array" in explain and "Control call" in explain


def test_history_prints_and_plots_the_kept_samples(service, tmp_path):
    system, _, _ = service
    samples = run_json(system, "history", "sim-guest-02", "balloon_cur")["samples"]
    assert samples and all(s["value"] > 0 for s in samples)
    table = momctl(system, "history", "sim-guest-02", "balloon_cur")
    assert table.returncode == 0 and " GiB" in table.stdout
    plot = tmp_path / "balloon.png"
    drawn = momctl(system, "history", "sim-guest-02", "balloon_cur", "--plot", str(plot))
    assert drawn.returncode == 0, drawn.stderr
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    host = momctl(system, "history", "host", "mem_free")
    assert host.returncode == 0 and host.stdout.strip()
    unknown = momctl(system, "history", "sim-guest-02", "no_such_field")
    assert unknown.returncode == 5


def test_history_plot_without_matplotlib_says_how_to_install_it(service, tmp_path):
    system, _, _ = service
    # matplotlib made unimportable in this one momctl process (a None entry
    # in sys.modules makes the import fail as if it were not installed).
    code = ("import sys; sys.modules['matplotlib'] = None; "
            "from momservice.cli.momctl import main; sys.exit(main(sys.argv[1:]))")
    result = subprocess.run(
        [sys.executable, "-c", code, "history", "sim-guest-02", "balloon_cur",
         "--plot", str(tmp_path / "x.png")],
        cwd=REPO, env=system.env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "pip install 'mom[plot]'" in result.stderr
    assert not (tmp_path / "x.png").exists()


def test_the_plot_extra_is_what_the_hint_names():
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert any(d.startswith("matplotlib") for d in extras["plot"])
