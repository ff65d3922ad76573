"""A policy can never take the host out of management.

Every change that would make a new active set (SetPolicy, DeletePolicy,
ReloadPolicies, ResetPolicies, SetParameters, SIGHUP) first evaluates it
once on the current statistics as a dry run; a set that fails there is
refused with PolicyTrialError and the active set, the store and
LastPolicyError stay as they were.  Policy files that fail at start-up
give way to the shipped defaults; on a reload the last good set stays.
Runs the Service without a bus (tests/helpers/service_setup.py: libvirt's
test driver, a temporary /proc and /sys, copies of the shipped policies).
"""

from __future__ import annotations

import logging

import pytest

from momservice.errors import Failed
from momservice.policy import PolicyError, PolicyTrialError
from momservice.policy_store import PolicyStore
from tests.helpers.service_setup import Setup

#: Parses and checks, fails as soon as it is evaluated: the issue's example.
HUGE = "(defvar x (<< 1 100000))\n"
#: Fails only for guests, in their item of ``with``.
GUEST_FAILS = '(with Guests g (g.Control "balloon_target" (/ g.balloon_cur 0)))\n'


@pytest.fixture
def setup(tmp_path) -> Setup:
    return Setup(tmp_path)


def started(setup: Setup, run, body, **config):
    """Run ``body(service)`` on a started service, stopped after."""
    async def main():
        service = setup.service(**config)
        await service.start()
        try:
            return await body(service)
        finally:
            await service.stop()
    return run(main())


def snapshot(service, setup: Setup) -> tuple:
    return (service.policy_texts(), PolicyStore(setup.state_dir).load(),
            dict(service.parameters), service.policy_load_error,
            str(service.engine.last_evaluation.result.error))


def test_set_policy_that_fails_when_evaluated_is_refused(setup: Setup, run) -> None:
    async def body(service):
        before = snapshot(service, setup)
        with pytest.raises(PolicyTrialError) as caught:
            service.set_policy("zz", HUGE)
        error = caught.value
        assert (error.policy, error.line) == ("zz", 1)
        assert "zz" in str(error) and "line 1" in str(error)
        assert snapshot(service, setup) == before
        # Still managed: the next evaluation runs the old set, successfully.
        evaluation = await service.evaluate_now(dry_run=True)
        assert evaluation.result.error is None
        assert "zz" not in service.policy_names()
    started(setup, run, body)


def test_a_policy_that_fails_for_a_guest_is_refused_and_names_it(setup: Setup, run) -> None:
    async def body(service):
        before = snapshot(service, setup)
        with pytest.raises(PolicyTrialError) as caught:
            service.set_policy("90-div", GUEST_FAILS)
        assert caught.value.guest in {g.name for g in service.engine.guests.values()}
        assert caught.value.guest in str(caught.value)
        assert snapshot(service, setup) == before
    started(setup, run, body)


def test_the_trial_keeps_no_variable_and_applies_nothing(setup: Setup, run) -> None:
    async def body(service):
        ksm = setup.ksm_files()
        service.set_policy("90-var", '(with Guests g (g.SetVar "seen" 1))\n'
                                     '(Host.Control "ksm_run" 0)\n')
        # Set, tried, active: but not evaluated for real yet.
        assert all("seen" not in g.variables for g in service.engine.guests.values())
        assert setup.ksm_files() == ksm
        await service.evaluate_now(dry_run=False)
        assert all(g.variables.get("seen") == 1 for g in service.engine.guests.values())
    started(setup, run, body)


def test_a_good_change_is_still_accepted_and_kept(setup: Setup, run) -> None:
    async def body(service):
        service.set_policy("50-mine", "(defvar mine 1)\n")
        assert "50-mine" in service.policy_names()
        assert PolicyStore(setup.state_dir).load() == {"50-mine": "(defvar mine 1)\n"}
    started(setup, run, body)


def test_set_parameters_that_break_the_policies_are_refused(setup: Setup, run) -> None:
    async def with_default(service):
        service.set_policy("90-param", "(defvar divisor 2)\n(/ 1 divisor)\n")
        before = snapshot(service, setup)
        with pytest.raises(PolicyTrialError) as caught:
            service.set_parameters({"divisor": 0, "other": 1})
        assert caught.value.policy == "90-param" and caught.value.line == 2
        assert snapshot(service, setup) == before  # not even "other"
        service.set_parameters({"divisor": 4})
        assert service.parameters == {"divisor": 4}
    started(setup, run, with_default)


def test_delete_policy_that_others_need_is_refused(setup: Setup, run) -> None:
    async def body(service):
        service.set_policy("50-defs", "(defvar needed 1)\n")
        service.set_policy("60-use", "(+ needed 1)\n")
        before = snapshot(service, setup)
        with pytest.raises(PolicyTrialError) as caught:
            service.delete_policy("50-defs")
        assert caught.value.policy == "60-use"
        assert snapshot(service, setup) == before
        assert (setup.state_dir / "policy.d" / "50-defs.policy").exists()
        service.delete_policy("60-use")
        service.delete_policy("50-defs")
        assert PolicyStore(setup.state_dir).load() == {}
    started(setup, run, body)


def test_reload_of_files_that_fail_keeps_the_last_good_set(setup: Setup, run,
                                                           caplog) -> None:
    async def body(service):
        before = service.policy_texts()
        (setup.policy_dir / "50-huge.policy").write_text(HUGE)
        caplog.set_level(logging.ERROR)
        with pytest.raises(PolicyTrialError):
            service.reload_policies()
        assert service.policy_texts() == before
        assert "50-huge" in service.policy_load_error
        assert "50-huge" in caplog.text
        # SIGHUP's path logs it and goes on.
        service.reload()
        assert service.policy_texts() == before
        # Fixed on disk: the next reload takes it and clears the error.
        (setup.policy_dir / "50-huge.policy").write_text("(defvar x (<< 1 10))\n")
        service.reload_policies()
        assert "50-huge" in service.policy_names()
        assert service.policy_load_error == ""
    started(setup, run, body)


def test_reset_that_would_fail_deletes_nothing(setup: Setup, run) -> None:
    async def body(service):
        # The files alone fail; a stored override of the same name mends them.
        (setup.policy_dir / "50-huge.policy").write_text(HUGE)
        service.set_policy("50-huge", "(defvar x 1)\n")
        service.reload_policies()
        before = snapshot(service, setup)
        with pytest.raises(PolicyTrialError):
            service.reset_policies()
        assert snapshot(service, setup)[:3] == before[:3]
        assert PolicyStore(setup.state_dir).names() == {"50-huge"}
        assert "reset" in service.policy_load_error
    started(setup, run, body)


def test_files_that_fail_at_start_give_way_to_the_shipped_defaults(setup: Setup, run,
                                                                   caplog,
                                                                   monkeypatch) -> None:
    shipped = setup.file_policies()
    (setup.policy_dir / "50-huge.policy").write_text(HUGE)
    caplog.set_level(logging.ERROR)
    notified: list[str] = []
    monkeypatch.setattr("momservice.engine.notify.notify", notified.append)

    async def body(service):
        assert service.policy_texts() == shipped
        assert "50-huge" in service.policy_load_error
        assert "shipped default" in service.policy_load_error
        assert service.engine.last_evaluation.result.error is None
        return service.policy_load_error
    message = started(setup, run, body)
    assert message in caplog.text
    status = [m for m in notified if m.startswith("STATUS=")]
    assert status and "policy files refused" in status[-1], notified


def test_a_syntax_error_is_still_policy_syntax_not_a_trial(setup: Setup, run) -> None:
    async def body(service):
        with pytest.raises(PolicyError) as caught:
            service.set_policy("50-bad", "(if 1 2)\n")
        assert not isinstance(caught.value, PolicyTrialError)
    started(setup, run, body)


def test_before_the_first_sample_the_check_waits_for_start_up(setup: Setup) -> None:
    service = setup.service()  # not started: no statistics to evaluate on
    service.set_policy("zz", HUGE)
    assert "zz" in service.policy_names()


def test_reset_that_the_store_refuses_keeps_what_it_still_holds(setup: Setup, run,
                                                                  monkeypatch) -> None:
    async def body(service):
        service.set_policy("50-mine", "(defvar mine 1)\n")

        def refuse() -> list[str]:
            raise PermissionError("read-only state directory")
        monkeypatch.setattr(service.library.store, "delete_all", refuse)
        with pytest.raises(Failed):
            service.reset_policies()
        # Nothing was deleted: the active set is what the disk still holds.
        assert "50-mine" in service.policy_names()
        assert service.policy_load_error == ""
    started(setup, run, body)


def test_reload_reads_the_etc_directory_created_after_start(setup: Setup, run, tmp_path,
                                                           monkeypatch) -> None:
    # No policy-dir configured: the shipped policies, then /etc/mom/policy.d once
    # it exists (here a temporary directory standing for it, absent at start).
    etc = tmp_path / "etc-mom-policy.d"
    monkeypatch.setattr("momservice.config.ETC_POLICY_DIR", etc)

    async def body(service):
        assert "50-late" not in service.policy_names()
        etc.mkdir()
        (etc / "50-late.policy").write_text("(defvar late 1)\n")
        service.reload()   # SIGHUP's path
        assert "50-late" in service.policy_names()
        (etc / "50-late.policy").unlink()
        service.reload_policies()
        assert "50-late" not in service.policy_names()
    started(setup, run, body, policy_dir=None)
