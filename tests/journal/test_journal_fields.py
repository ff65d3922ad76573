"""Journal fields on momd's log records: GUEST_NAME/GUEST_UUID, MOM_POLICY(_LINE).

The records are captured with caplog from the real engine, controllers and
policy loading, over the simulator (momservice/simulator: the same
interfaces as libvirt).  That the fields reach a real journald, and are
selectable there, is tests/journal/test_journald_momd.py.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from momservice.config import Config
from momservice.controllers import BalloonController
from momservice.journal_fields import guest_fields, policy_error_fields, policy_fields
from momservice.momd import setup_logging
from momservice.policy import PolicyError, PolicySet, PolicyTrialError
from momservice.policy_store import PolicyStore
from momservice.policy_library import load_policy_texts
from momservice.simulator.lab import Lab
from tests.helpers.service_setup import Setup

SIM = "sim:///?guests=5&seed=1"
# UUIDs of no simulated guest.
GHOST = "0000dead-0000-0000-0000-000000000001"
PHANTOM = "0000dead-0000-0000-0000-000000000002"

# One policy that makes the engine and the balloon controller say something
# about each of five guests, each in a different way.
GUEST_POLICY = """\
(def misbehave (guest)
    (if (== (guest.Prop "name") "sim-guest-01")
        (guest.Control "balloon_target" "much")
    (if (== (guest.Prop "name") "sim-guest-02")
        (guest.Control "balloon_target" 1)
    (if (== (guest.Prop "name") "sim-guest-03")
        (guest.Control "balloon_target" guest.balloon_cur)
    (if (== (guest.Prop "name") "sim-guest-04")
        (/ guest.balloon_cur 0)
        (guest.Control "balloon_target" (- guest.balloon_cur 65536)))))))
(with Guests guest (misbehave guest))
"""
GUEST_POLICY_ERROR_LINE = 9   # the division by zero


def fields_of(record: logging.LogRecord) -> dict[str, str]:
    """The journal fields a record carries (its upper-case attributes)."""
    return {k: v for k, v in vars(record).items() if k.isupper()}


def test_fields_leave_out_what_is_unknown():
    assert guest_fields("u-1", "db1") == {"GUEST_NAME": "db1", "GUEST_UUID": "u-1"}
    assert guest_fields("u-1") == {"GUEST_UUID": "u-1"}
    assert policy_fields("50-local", 3) == {"MOM_POLICY": "50-local", "MOM_POLICY_LINE": "3"}
    assert policy_fields("50-local") == {"MOM_POLICY": "50-local"}
    # A line without a policy says nothing one could select on.
    assert policy_fields(None, 3) == {}
    assert policy_error_fields(PolicyError("boom", 7, "zz")) == {
        "MOM_POLICY": "zz", "MOM_POLICY_LINE": "7"}
    trial = PolicyTrialError(PolicyError("boom", 7, "zz"), "db1")
    assert policy_error_fields(trial) == {
        "MOM_POLICY": "zz", "MOM_POLICY_LINE": "7", "GUEST_NAME": "db1"}


def test_every_message_about_a_guest_names_it_in_fields(run, caplog):
    lab = Lab(SIM, PolicySet({"50-guests": GUEST_POLICY}))
    guests = {uuid: g.name for uuid, g in lab.simulation.guests.items()}
    gone = next(u for u, n in guests.items() if n == "sim-guest-05")

    async def go():
        await lab.start()
        # A guest shuts down: the hypervisor notices at its next resync.
        del lab.simulation.guests[gone]
        await lab.hypervisor.resync()
        # A balloon command the hypervisor refuses (no such domain), and
        # one for a guest whose sample lacks its balloon range.
        await BalloonController(lab.hypervisor).apply(
            {GHOST: {"balloon_target": 1048576}, PHANTOM: {"balloon_target": 1048576}},
            {GHOST: {"balloon_max": 4194304}, PHANTOM: {}},
            {GHOST: "ghost", PHANTOM: "phantom"})
        # A balloon set by hand, in a dry run.
        first = next(u for u, n in guests.items() if n == "sim-guest-01")
        await BalloonController(lab.hypervisor, dry_run=True).set_target(
            first, 3145728, lab.engine.guests[first].latest, "sim-guest-01")
        await lab.stop()

    with caplog.at_level(logging.DEBUG, "momservice"):
        run(go())
    guests.update({GHOST: "ghost", PHANTOM: "phantom"})

    about: dict[str, list[str]] = {name: [] for name in guests.values()}
    for record in caplog.records:
        message = record.getMessage()
        named = [(u, n) for u, n in guests.items() if u in message or n in message]
        if not named:
            assert "GUEST_NAME" not in fields_of(record), message
            continue
        assert len(named) == 1, message
        uuid, name = named[0]
        assert fields_of(record)["GUEST_NAME"] == name, message
        assert fields_of(record)["GUEST_UUID"] == uuid, message
        about[name].append(message)

    def said(name: str, text: str) -> bool:
        return any(text in m for m in about[name])

    # Each path was taken, so each was checked above.
    assert all(said(n, "is now managed") for n in guests.values() if n.startswith("sim-"))
    assert said("sim-guest-01", "ignoring balloon target 'much'")
    assert said("sim-guest-02", "clamped") and said("sim-guest-02", "Set balloon")
    assert said("sim-guest-02", "simulated guest")
    assert said("sim-guest-03", "already at")
    assert said("sim-guest-04", "policy error for guest")
    assert said("sim-guest-05", "is gone")
    assert said("sim-guest-01", "Dry run: would set balloon")
    assert said("ghost", "could not set balloon")
    assert said("phantom", "no balloon_max")


def first_evaluation(run, caplog, policies: dict[str, str]) -> Lab:
    """The engine's start on the simulator (one evaluation), its records in caplog."""
    lab = Lab(SIM, PolicySet(policies))

    async def go():
        await lab.start()
        await lab.stop()

    with caplog.at_level(logging.INFO, "momservice"):
        run(go())
    return lab


def test_a_policy_error_for_one_guest_names_the_guest_and_the_policy(run, caplog):
    lab = first_evaluation(run, caplog, {"50-guests": GUEST_POLICY})
    [record] = [r for r in caplog.records if "policy error for guest" in r.getMessage()]
    uuid = next(u for u, g in lab.simulation.guests.items() if g.name == "sim-guest-04")
    assert record.levelno == logging.WARNING
    assert fields_of(record) == {
        "GUEST_NAME": "sim-guest-04", "GUEST_UUID": uuid,
        "MOM_POLICY": "50-guests", "MOM_POLICY_LINE": str(GUEST_POLICY_ERROR_LINE)}
    assert record.exc_info is None


def test_a_failed_evaluation_names_the_policy_and_line_without_a_traceback(run, caplog):
    first_evaluation(run, caplog, {
        "10-fine": "(defvar a 1)\n",
        "60-huge": "(defvar a 1)\n(defvar x (<< 1 100000))\n"})
    [record] = [r for r in caplog.records if "policy evaluation failed" in r.getMessage()]
    assert record.levelno == logging.ERROR
    assert fields_of(record) == {"MOM_POLICY": "60-huge", "MOM_POLICY_LINE": "2"}
    assert not [r for r in caplog.records if r.exc_info or r.exc_text]


def test_policy_files_that_do_not_load_are_named_in_fields(tmp_path, caplog):
    (tmp_path / "10-good.policy").write_text("(defvar a 1)\n")
    (tmp_path / "20-broken.policy").write_text("(defvar a 1)\n\n(defvar b ))\n")
    (tmp_path / "30-binary.policy").write_bytes(b"(defvar a \xff)\n")
    with caplog.at_level(logging.INFO, "momservice"):
        texts = load_policy_texts([tmp_path])
    assert list(texts) == ["10-good"]
    errors = {r.getMessage(): fields_of(r) for r in caplog.records
              if r.levelno >= logging.ERROR}
    assert len(errors) == 2, errors
    broken = next(f for m, f in errors.items() if "20-broken" in m)
    assert broken == {"MOM_POLICY": "20-broken", "MOM_POLICY_LINE": "3"}
    binary = next(f for m, f in errors.items() if "30-binary" in m)
    assert binary == {"MOM_POLICY": "30-binary"}   # no line: it could not be read
    assert not [r for r in caplog.records if r.exc_info]


# Fails for every guest, on line 2; the trial names the first guest.
FAILS_FOR_GUESTS = '(defvar a 1)\n(with Guests g (g.Control "balloon_target" (/ g.balloon_cur 0)))\n'


def test_policy_files_refused_at_start_or_reload_are_named(tmp_path, run, caplog):
    setup = Setup(tmp_path)
    (setup.policy_dir / "50-fails.policy").write_text(FAILS_FOR_GUESTS)
    guests = {spec.name for spec in setup.specs}

    async def go():
        service = setup.service()
        await service.start()    # refused: the shipped defaults run
        try:
            with pytest.raises(PolicyTrialError):
                service.reload_policies()
        finally:
            await service.stop()

    with caplog.at_level(logging.ERROR, "momservice"):
        run(go())
    start, reload = [r for r in caplog.records if "50-fails" in r.getMessage()]
    assert "shipped default" in start.getMessage() and "not reloaded" in reload.getMessage()
    for record in (start, reload):
        fields = fields_of(record)
        assert fields.pop("GUEST_NAME") in guests, record.getMessage()
        assert fields == {"MOM_POLICY": "50-fails", "MOM_POLICY_LINE": "2"}
        assert record.exc_info is None


def test_a_stored_policy_that_cannot_be_read_is_named(tmp_path, caplog):
    store = PolicyStore(tmp_path)
    store.save("40-mine", "(defvar a 1)\n")
    store.path("40-mine").write_bytes(b"\xff\xfe")
    with caplog.at_level(logging.ERROR, "momservice"):
        assert store.load() == {}
    [record] = caplog.records
    assert fields_of(record) == {"MOM_POLICY": "40-mine"}


@contextmanager
def momd_logging(config: Config) -> Iterator[logging.Handler]:
    """momd's setup_logging on the root logger, which is given back after."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    setup_logging(config)
    try:
        yield root.handlers[0]
    finally:
        for handler in root.handlers[:]:
            root.removeHandler(handler)
            handler.close()
        for handler in saved_handlers:
            root.addHandler(handler)
        root.setLevel(saved_level)


LINE_END = " WARNING momservice.test: guest db1: something"


def test_file_and_stderr_logs_are_unchanged_by_the_fields(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    monkeypatch.delenv("INVOCATION_ID", raising=False)
    log = logging.getLogger("momservice.test")
    fields = guest_fields("u-1", "db1") | policy_fields("50-x", 4)

    with momd_logging(Config(log=str(tmp_path / "momd.log"))):
        log.warning("guest %s: something", "db1", extra=fields)
    assert (tmp_path / "momd.log").read_text().splitlines()[-1].endswith(LINE_END)

    with momd_logging(Config(log="stdio")):
        log.warning("guest %s: something", "db1", extra=fields)
    err = capsys.readouterr().err
    assert err.endswith(LINE_END + "\n") and err.count("\n") == 1, err


def test_the_journal_handler_hands_the_fields_over(monkeypatch):
    """python-systemd's JournalHandler, with its send function captured.

    Only the hand-over from logging to python-systemd: that journald keeps
    the upper-case fields (and drops the record's lower-case attributes) is
    checked against a real journald in test_journald_momd.py.
    """
    pytest.importorskip("systemd.journal")
    monkeypatch.setenv("INVOCATION_ID", "0123456789abcdef0123456789abcdef")
    sent: list[dict[str, object]] = []
    with momd_logging(Config(log="stdio")) as handler:
        assert type(handler).__name__ == "JournalHandler"
        # Positional, as python-systemd's send() takes it: the record's own
        # attributes (``message`` among them) come as keywords.
        handler.send = lambda text, /, **fields: sent.append({"MESSAGE": text, **fields})
        logging.getLogger("momservice.test").error(
            "policy %s skipped", "50-x", extra=policy_fields("50-x", 4))
    [entry] = sent
    assert entry["MESSAGE"] == "momservice.test: policy 50-x skipped"
    assert entry["MOM_POLICY"] == "50-x" and entry["MOM_POLICY_LINE"] == "4"
    assert entry["SYSLOG_IDENTIFIER"] == "momd" and entry["PRIORITY"] == "3"
