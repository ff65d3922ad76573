"""The operations of the Service that the D-Bus layer exposes, without a bus
(set up by tests/helpers/service_setup.py).
"""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path
from typing import Any

import pytest

from momservice.errors import Failed
from momservice.hypervisor import GuestInfo, HypervisorError
from momservice.policy import PolicyError, codegen, forget_compiled_policies
from momservice.policy_store import PolicyStore
from momservice.service import Service
from tests.helpers.service_setup import GiB, Setup

MiB = 1024


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    return Setup(tmp_path)


async def balloons(service: Service) -> dict[str, int]:
    """The balloon sizes libvirt reports now (not the engine's last sample)."""
    samples = await service.hypervisor.collect()
    return {uuid: sample["balloon_cur"] for uuid, sample in samples.items()}


def test_service_stays_off_the_real_host(setup: Setup) -> None:
    service = setup.service()
    ksm = service.mechanisms["KSM"]
    assert ksm.ksm_dir == setup.ksm_dir and ksm in service.engine.mechanisms
    assert service.library.store.directory == setup.state_dir / "policy.d"
    assert service.policy_names() == ["00-defines", "02-balloon", "03-ksm"]
    assert service.policy_texts() == setup.file_policies()


# -- policies --------------------------------------------------------------------

def test_a_syntax_error_names_the_line_and_changes_nothing(setup: Setup) -> None:
    service = setup.service()
    service.set_policy("50-mine", "(defvar x 1)\n")
    before = service.policy_texts()
    stored = PolicyStore(setup.state_dir).load()
    for name in ("50-mine", "60-new", "02-balloon"):
        with pytest.raises(PolicyError) as caught:
            service.set_policy(name, "# a comment\n(defvar y 2)\n(if 1 2)\n")
        assert caught.value.line == 3 and "line 3" in str(caught.value)
        assert name in str(caught.value)
        assert service.policy_texts() == before
        assert PolicyStore(setup.state_dir).load() == stored == {"50-mine": "(defvar x 1)\n"}


def test_a_policy_the_disk_refuses_is_not_activated(setup: Setup) -> None:
    setup.state_dir.write_text("not a directory")  # ENOTDIR, even for root
    service = setup.service()
    before = service.policy_texts()
    with pytest.raises(Failed):
        service.set_policy("50-mine", "(defvar x 1)")
    with pytest.raises(Failed):
        service.set_policy("03-ksm", "")
    assert service.policy_texts() == before


@pytest.mark.parametrize("name", ["../escape", ".hidden", "a/b", "", "x" * 65, "x\n"])
def test_a_bad_policy_name_is_an_invalid_argument(setup: Setup, name: str) -> None:
    service = setup.service()
    with pytest.raises(ValueError, match="policy name"):
        service.set_policy(name, "(defvar x 1)")
    assert service.policy_names() == ["00-defines", "02-balloon", "03-ksm"]
    assert not (setup.state_dir / "policy.d").exists()
    assert not (setup.state_dir / "escape.policy").exists()


def test_set_policy_is_active_stored_and_survives_a_restart(setup: Setup) -> None:
    service = setup.service()
    text = "# mine\n(defvar my_factor 2)\n"
    service.set_policy("50-mine", text)
    assert service.policy_names() == ["00-defines", "02-balloon", "03-ksm", "50-mine"]
    assert service.policy_text("50-mine") == text
    assert (setup.state_dir / "policy.d" / "50-mine.policy").read_text() == text

    restarted = setup.service()
    assert restarted.policy_names() == ["00-defines", "02-balloon", "03-ksm", "50-mine"]
    assert restarted.policy_text("50-mine") == text
    # Replacing it replaces the stored text too.
    restarted.set_policy("50-mine", "(defvar my_factor 3)\n")
    assert setup.service().policy_text("50-mine") == "(defvar my_factor 3)\n"


def test_a_restart_links_the_policies_from_the_code_cache(setup: Setup, monkeypatch) -> None:
    monkeypatch.delenv("CACHE_DIRECTORY", raising=False)
    # Compiled by an earlier test of this process: linked, and not stored.
    forget_compiled_policies()
    service = setup.service()
    cache = service.library.code_cache
    assert cache is not None and cache.directory == setup.state_dir / "cache"
    service.set_policy("50-mine", "(defvar my_factor 2)\n")
    # Each policy's analysis and code; the trial sets share them.
    assert len(list(cache.directory.glob("*.code"))) >= 2 * 4

    def forbidden(*args, **kwargs):
        raise AssertionError("compiled although the code cache holds the code")
    forget_compiled_policies()  # what a new process starts with
    monkeypatch.setattr(codegen, "compile", forbidden, raising=False)
    restarted = setup.service()
    assert restarted.policy_names() == ["00-defines", "02-balloon", "03-ksm", "50-mine"]
    assert restarted.library.active.texts == service.library.active.texts
    monkeypatch.delattr(codegen, "compile")

    forget_compiled_policies()
    assert setup.service(policy_cache=False).library.code_cache is None


def test_a_stored_policy_overrides_the_file_and_delete_brings_the_file_back(
        setup: Setup, caplog) -> None:
    service = setup.service()
    file_text = setup.file_policies()["03-ksm"]
    service.set_policy("03-ksm", "")  # an empty policy: KSM left alone, durably
    assert service.policy_text("03-ksm") == ""
    caplog.set_level(logging.INFO)
    restarted = setup.service()
    assert restarted.policy_text("03-ksm") == ""
    assert "overrides" in caplog.text and "03-ksm.policy" in caplog.text

    restarted.delete_policy("03-ksm")
    assert restarted.policy_text("03-ksm") == file_text
    assert PolicyStore(setup.state_dir).names() == set()
    assert setup.service().policy_text("03-ksm") == file_text

    # A stored policy without a file of its name is simply gone.
    restarted.set_policy("70-extra", "(defvar z 1)")
    restarted.delete_policy("70-extra")
    assert "70-extra" not in restarted.policy_names()
    with pytest.raises(KeyError):
        restarted.delete_policy("70-extra")


def test_a_file_policy_cannot_be_deleted_over_the_bus(setup: Setup) -> None:
    service = setup.service()
    with pytest.raises(ValueError, match=r'SetPolicy\(.02-balloon., ""\)'):
        service.delete_policy("02-balloon")
    assert "02-balloon" in service.policy_names()
    assert (setup.policy_dir / "02-balloon.policy").exists()
    for missing in ("nope", "../02-balloon", ""):
        with pytest.raises(KeyError) as caught:
            service.delete_policy(missing)
        assert str(caught.value) == f"no policy {missing!r}"
        with pytest.raises(KeyError):
            service.policy_text(missing)


def test_reset_drops_every_stored_policy(setup: Setup) -> None:
    service = setup.service()
    service.set_policy("03-ksm", "")
    service.set_policy("50-mine", "(defvar x 1)")
    assert service.reset_policies() == ["03-ksm", "50-mine"]
    assert service.policy_texts() == setup.file_policies()
    assert PolicyStore(setup.state_dir).names() == set()
    assert setup.service().policy_texts() == setup.file_policies()
    assert service.reset_policies() == []


def test_bad_stored_policies_are_skipped_at_start_and_named(setup: Setup, caplog) -> None:
    store = PolicyStore(setup.state_dir)
    store.save("50-good", "(defvar good 1)\n")
    store.save("51-broken", "(defvar ok 1)\n(if 1 2)\n")
    corrupt = store.directory / "52-corrupt.policy"
    corrupt.write_bytes(b"(defvar s \"\xff\xfe\")\n")
    caplog.set_level(logging.ERROR)
    service = setup.service()
    assert service.policy_names() == ["00-defines", "02-balloon", "03-ksm", "50-good"]
    assert f"{store.directory / '51-broken.policy'}:2" in caplog.text
    assert str(corrupt) in caplog.text
    # A stored policy that did not load can still be deleted (or replaced).
    service.delete_policy("52-corrupt")
    assert not corrupt.exists()
    service.set_policy("51-broken", "(defvar fixed 1)")
    assert "51-broken" in service.policy_names()


def test_reload_reads_the_directory_and_the_store_again(setup: Setup, caplog) -> None:
    service = setup.service()
    service.set_policy("50-mine", "(defvar x 1)")
    (setup.policy_dir / "10-new.policy").write_text("(defvar y 2)\n")
    (setup.policy_dir / "20-broken.policy").write_text("(if 1 2)\n")
    (setup.policy_dir / "03-ksm.policy").unlink()
    caplog.set_level(logging.ERROR)
    service.reload_policies()
    assert service.policy_names() == ["00-defines", "02-balloon", "10-new", "50-mine"]
    assert f"{setup.policy_dir / '20-broken.policy'}:1" in caplog.text


# -- parameters --------------------------------------------------------------------

def test_set_parameters_merges_checked_values(setup: Setup) -> None:
    service = setup.service()
    service.set_parameters({"ksm_free_share": 0.3, "label": "x", "flag": True})
    service.set_parameters({"label": 7, "big": 2**64 - 1, "neg": -(2**63)})
    assert service.parameters == {"ksm_free_share": 0.3, "label": 7, "flag": True,
                                  "big": 2**64 - 1, "neg": -(2**63)}
    assert service.engine.params == service.parameters
    before = service.parameters
    bad_values: list[Any] = [[1], None, {"a": 1}, b"x", math.nan, math.inf, 2**64, 1j]
    for bad in bad_values:
        with pytest.raises(ValueError):
            service.set_parameters({"fresh": 1, "bad": bad})
        assert service.parameters == before  # nothing merged, not even "fresh"
    for name in ["a.b", "1x", "", "x y", "if", "Host", "Guests", "min", "nil", "é", 5]:
        with pytest.raises(ValueError, match="parameter name"):
            service.set_parameters({name: 1})
    assert service.parameters == before
    with pytest.raises(ValueError):
        service.set_parameters([("a", 1)])  # type: ignore[arg-type]


# -- evaluation ---------------------------------------------------------------------

def test_evaluate_now_dry_run_decides_and_changes_nothing(run, setup: Setup) -> None:
    async def body() -> None:
        service = setup.service()
        service.set_policy("90-param", "(+ my_param 1)\n")
        service.set_parameters({"my_param": 41})
        setup.host.set_memory(64 * GiB, int(64 * GiB * 0.05))  # tight: under 8 % free
        await service.start()  # its first evaluation already shrinks the guests a step
        try:
            ksm = setup.ksm_files()
            before = await balloons(service)
            evaluation = await service.evaluate_now(dry_run=True)
            assert evaluation.reason == "request" and evaluation.dry_run
            assert evaluation.result.error is None
            assert 42 in evaluation.result.values  # the parameter reached the policy
            targets = {u: c["balloon_target"] for u, c in evaluation.guest_controls.items()}
            assert targets and any(targets[u] < before[u] for u in targets)
            assert evaluation.host_controls.get("ksm_run") == 1
            assert evaluation.applied_balloons == {} and evaluation.applied_ksm == {}
            assert await balloons(service) == before
            assert setup.ksm_files() == ksm
            # The same request for real does act: the checks above can fail.
            evaluation = await service.evaluate_now(dry_run=False)
            assert not evaluation.dry_run and evaluation.applied_balloons
            after = await balloons(service)
            for uuid, target in evaluation.applied_balloons.items():
                assert after[uuid] == target < before[uuid]
        finally:
            await service.stop()

    run(body())


# -- balloons ------------------------------------------------------------------------

def test_set_balloon_target_moves_the_guest_within_its_range(run, setup: Setup) -> None:
    small, guaranteed = setup.specs[1], setup.specs[2]  # 2 GiB; 3 GiB with 512 MiB min

    async def body() -> None:
        service = setup.service()
        await service.start()
        try:
            assert await service.set_balloon_target(guaranteed.uuid, GiB) == GiB
            assert (await balloons(service))[guaranteed.uuid] == GiB
            # The engine's sample is older than that; a request back to the
            # size it shows is still sent.
            old = service.engine.guests[guaranteed.uuid].latest["balloon_cur"]
            assert await service.set_balloon_target(guaranteed.uuid, old) == old
            assert (await balloons(service))[guaranteed.uuid] == old
            assert await service.set_balloon_target(small.uuid, small.memory_kib) \
                == small.memory_kib
            assert (await balloons(service))[small.uuid] == small.memory_kib

            before = await balloons(service)
            for uuid, kib, why in [
                    (small.uuid, small.memory_kib + 1, "above balloon_max"),
                    (small.uuid, 200 * MiB, "below the 256 MiB floor"),
                    (guaranteed.uuid, 400 * MiB, "below the 512 MiB min_guarantee"),
                    (small.uuid, -1, "negative"),
                    (small.uuid, True, "not a number")]:
                with pytest.raises(ValueError):
                    await service.set_balloon_target(uuid, kib)
            assert await balloons(service) == before
            with pytest.raises(KeyError) as caught:
                await service.set_balloon_target("00000000-0000-4000-8000-00000000dead", GiB)
            assert "00000000-0000-4000-8000-00000000dead" in str(caught.value)
        finally:
            await service.stop()
        # Disconnected: the hypervisor refuses (Failed on the bus).
        with pytest.raises(HypervisorError):
            await service.set_balloon_target(small.uuid, GiB)

    run(body())


def test_set_balloon_target_without_the_balloon_controller(run, setup: Setup) -> None:
    guest = setup.specs[3]  # 4 GiB, no min_guarantee

    async def body() -> None:
        service = setup.service(controllers=(), balloon_floor=2 * GiB)
        assert [m.name for m in service.engine.mechanisms] == []
        await service.start()
        try:
            before = (await balloons(service))[guest.uuid]
            with pytest.raises(ValueError, match="2097152"):  # the configured floor
                await service.set_balloon_target(guest.uuid, GiB)
            assert (await balloons(service))[guest.uuid] == before
            assert await service.set_balloon_target(guest.uuid, 3 * GiB) == 3 * GiB
            assert (await balloons(service))[guest.uuid] == 3 * GiB
        finally:
            await service.stop()

    run(body())


def test_set_balloon_target_in_a_dry_run_sends_nothing(run, setup: Setup) -> None:
    guest = setup.specs[3]

    async def body() -> None:
        service = setup.service(dry_run=True)
        await service.start()
        try:
            before = (await balloons(service))[guest.uuid]
            assert await service.set_balloon_target(guest.uuid, 3 * GiB) == 3 * GiB
            assert (await balloons(service))[guest.uuid] == before != 3 * GiB
        finally:
            await service.stop()

    run(body())


# -- KSM ---------------------------------------------------------------------------------

READ_ONLY_INT = Path("/proc/sys/kernel/ngroups_max")


@pytest.mark.parametrize("controllers", [("Balloon", "KSM"), ("Balloon",)])
def test_set_ksm_writes_the_ksm_directory(run, setup: Setup, controllers) -> None:
    service = setup.service(controllers=controllers)
    written = run(service.set_ksm({"pages_to_scan": 500, "sleep_millisecs": 20, "run": 0}))
    assert written == {"pages_to_scan": 500, "run": 0}  # sleep_millisecs was 20 already
    files = setup.ksm_files()
    assert (files["pages_to_scan"], files["sleep_millisecs"], files["run"]) \
        == ("500\n", "20\n", "0\n")
    for bad in ({"run": 3}, {"pages_to_scan": -1}, {"sleep_millisecs": "x"},
                {"run": 1, "bogus": 1}, {"merge_across_nodes": 2}):
        with pytest.raises(ValueError):
            run(service.set_ksm(bad))
    assert setup.ksm_files() == files


def test_set_ksm_reports_a_kernel_refusal(run, setup: Setup) -> None:
    service = setup.service()
    if READ_ONLY_INT.is_file():
        # A file that reads as a number but refuses writes even from root: a
        # read-only sysctl, as in the KSM controller's own tests.
        (setup.ksm_dir / "sleep_millisecs").unlink()
        (setup.ksm_dir / "sleep_millisecs").symlink_to(READ_ONLY_INT)
        wanted = int(READ_ONLY_INT.read_text()) + 1
        with pytest.raises(Failed, match="sleep_millisecs") as caught:
            run(service.set_ksm({"sleep_millisecs": wanted, "run": 0}))
        assert "run=0" in str(caught.value)  # what went through is said too
        assert setup.ksm_files()["run"] == "0\n"
        (setup.ksm_dir / "sleep_millisecs").unlink()
    # Without KSM in the kernel (no directory): nothing can be read.
    shutil.rmtree(setup.ksm_dir)
    with pytest.raises(Failed, match="cannot read the KSM settings"):
        run(service.set_ksm({"run": 1}))


def test_set_ksm_in_a_dry_run_writes_nothing(run, setup: Setup) -> None:
    service = setup.service(dry_run=True)
    files = setup.ksm_files()
    assert run(service.set_ksm({"pages_to_scan": 500})) == {"pages_to_scan": 500}
    assert setup.ksm_files() == files


# -- verbosity ---------------------------------------------------------------------------

def test_verbosity(setup: Setup) -> None:
    service = setup.service()
    root = logging.getLogger()
    saved = root.level
    try:
        for given, expected in [("debug", "debug"), ("WARN", "warning"), ("2", "error"),
                                ("5", "debug"), ("Critical", "critical"), (" info ", "info")]:
            service.set_verbosity(given)
            assert service.verbosity == expected
            assert root.level == logging.getLevelName(expected.upper())
        for bad in ("loud", "6", "0", "", "debug2"):
            with pytest.raises(ValueError, match="1 = critical"):
                service.set_verbosity(bad)
            assert service.verbosity == "info"
    finally:
        root.setLevel(saved)


# -- history -------------------------------------------------------------------------------

def test_get_history_of_the_host_and_a_guest(setup: Setup) -> None:
    service = setup.service()  # history length 3
    host = service.engine.host
    host.add_sample({"mem_free": 100}, 1000.0)
    host.add_sample({"mem_free": 200}, 1001.25)
    host.add_sample({"mem_free": None}, 1002.0)     # nil: left out
    host.add_sample({"mem_free": 400, "cpu_count": 4}, 1003.5)
    host.add_sample({"mem_free": 500}, None)        # time unknown: left out
    assert service.get_history("host", "mem_free") == [(1_003_500_000, 400.0)]
    assert service.get_history("host", "cpu_count") == [(1_003_500_000, 4.0)]
    assert service.get_history("host", "swap_in") == []  # known, never sampled

    spec = setup.specs[0]
    service.engine.guest_added(GuestInfo(spec.uuid, spec.name))
    guest = service.engine.guests[spec.uuid]
    guest.add_sample({"balloon_cur": 1024, "rss": 7.5}, 2000.0)
    guest.add_sample({"balloon_cur": 2048}, 2001.0)
    assert service.get_history(spec.uuid, "balloon_cur") == [(2_000_000_000, 1024.0),
                                                             (2_001_000_000, 2048.0)]
    assert service.get_history(spec.uuid, "rss") == [(2_000_000_000, 7.5)]

    with pytest.raises(KeyError, match="no_such_field"):
        service.get_history("host", "no_such_field")
    with pytest.raises(KeyError):
        service.get_history("host", "balloon_cur")  # a guest field
    with pytest.raises(KeyError, match="not-a-guest"):
        service.get_history("not-a-guest", "balloon_cur")


def test_history_of_engine_samples_has_their_times(run, setup: Setup) -> None:
    async def body() -> None:
        service = setup.service()
        clock = iter(float(t) for t in range(5000, 6000))
        service.engine.clock = lambda: next(clock)
        await service.start()
        try:
            await service.evaluate_now(dry_run=True)
            host = service.get_history("host", "mem_free")
            assert len(host) == 2 and all(t >= 5_000_000_000 for t, _ in host)
            guest = service.get_history(setup.specs[0].uuid, "balloon_cur")
            assert len(guest) == 2
        finally:
            await service.stop()

    run(body())
