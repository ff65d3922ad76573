"""The private system bus + polkitd fixture, and what polkit answers on it.

These also pin down the behaviour momd's authorization is built on: the
results of CheckAuthorization for root and for an unprivileged user, with
and without AllowUserInteraction, and that our bus policy lets everyone call
org.ovirt.mom1 while only root may own it.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from dbus_next import Message, MessageType, Variant
from dbus_next.aio import MessageBus
from dbus_next.service import ServiceInterface, method, signal

from momservice.contract import ACTIONS, MANAGER_PATH
from momservice.contract import BUS_NAME as MOM

from tests.helpers.as_nobody import (
    nobody_command,
    nobody_env,
    nobody_python,
    python_as_nobody,
    run_as_nobody,
)
from tests.helpers.private_bus import (
    MOM_POLKIT_POLICY,
    POLKIT_ACTIONS_DIR,
    POLKIT_NAME,
    PrivateSystemBus,
    mom_service_file,
    skip_reason,
    system_bus_with_polkit,
)

_reason = skip_reason()
pytestmark = pytest.mark.skipif(_reason is not None, reason=_reason or "")

ALLOW_USER_INTERACTION = 1

# polkit's PolkitImplicitAuthorization values (EnumerateActions).
AUTH_ADMIN = 2
AUTH_ADMIN_KEEP = 4


def _check_message(subject_name: str, action: str, flags: int) -> Message:
    return Message(
        destination=POLKIT_NAME, path="/org/freedesktop/PolicyKit1/Authority",
        interface="org.freedesktop.PolicyKit1.Authority", member="CheckAuthorization",
        signature="(sa{sv})sa{ss}us",
        body=[["system-bus-name", {"name": Variant("s", subject_name)}],
              action, {}, flags, ""])


async def _check(address: str, action: str, flags: int, subject: str | None = None):
    """CheckAuthorization from a root connection; ``subject`` default: itself."""
    bus = await MessageBus(bus_address=address).connect()
    try:
        reply = await bus.call(_check_message(subject or bus.unique_name, action, flags))
        if reply.message_type == MessageType.ERROR:
            return ("error", reply.error_name, reply.body)
        authorized, challenge, details = reply.body[0]
        return (authorized, challenge, details)
    finally:
        bus.disconnect()


# Run as nobody: CheckAuthorization on its own connection, results as JSON.
_NOBODY_CHECK = textwrap.dedent("""
    import asyncio, json, sys
    from dbus_next import Message, MessageType, Variant
    from dbus_next.aio import MessageBus
    from dbus_next.constants import BusType

    async def main():
        bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
        out = []
        for action in sys.argv[1:]:
            for flags in (0, 1):
                reply = await bus.call(Message(
                    destination="org.freedesktop.PolicyKit1",
                    path="/org/freedesktop/PolicyKit1/Authority",
                    interface="org.freedesktop.PolicyKit1.Authority",
                    member="CheckAuthorization", signature="(sa{sv})sa{ss}us",
                    body=[["system-bus-name", {"name": Variant("s", bus.unique_name)}],
                          action, {}, flags, ""]))
                if reply.message_type == MessageType.ERROR:
                    out.append([action, flags, "error", reply.error_name])
                else:
                    out.append([action, flags, *reply.body[0]])
        print(json.dumps(out))

    asyncio.run(asyncio.wait_for(main(), 20))
""")


# --------------------------------------------------------------------------
# The fixture itself


def test_bus_runs_with_polkit(system):
    assert system.polkit_running
    assert system.bus.running
    assert Path(system.bus.socket_path).exists()
    assert system.bus.name_has_owner(POLKIT_NAME)
    if shutil.which("busctl"):
        listing = subprocess.run(["busctl", f"--address={system.address}", "list",
                                  "--no-pager", "--no-legend"],
                                 capture_output=True, text=True, timeout=10)
        assert listing.returncode == 0, listing.stderr
        assert any(line.split()[:1] == [POLKIT_NAME] for line in listing.stdout.splitlines())


def test_our_actions_are_registered_with_their_defaults(system, run):
    async def enumerate_actions():
        bus = await MessageBus(bus_address=system.address).connect()
        try:
            reply = await bus.call(Message(
                destination=POLKIT_NAME, path="/org/freedesktop/PolicyKit1/Authority",
                interface="org.freedesktop.PolicyKit1.Authority",
                member="EnumerateActions", signature="s", body=[""]))
            assert reply.message_type == MessageType.METHOD_RETURN, reply.body
            return {a[0]: a for a in reply.body[0]}
        finally:
            bus.disconnect()

    actions = run(enumerate_actions(), 20)
    for action_id in ACTIONS:
        assert action_id in actions
        _, description, message, _vendor, _url, _icon, any_, inactive, active, _ann = \
            actions[action_id]
        assert description and message
        assert (any_, inactive, active) == (AUTH_ADMIN, AUTH_ADMIN, AUTH_ADMIN_KEEP)


def test_unknown_action_is_an_error(system, run):
    result = run(_check(system.address, f"{MOM}.no-such-action", 0), 20)
    assert result[0] == "error"


def test_run_as_nobody_is_nobody_and_reaches_the_bus(system):
    result = run_as_nobody(["id", "-u"], system.client_env(), timeout=10)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "65534"
    code = ("import subprocess, os; print(subprocess.run(['dbus-send', '--system', "
            "'--print-reply', '--dest=org.freedesktop.DBus', '/org/freedesktop/DBus', "
            "'org.freedesktop.DBus.GetId'], capture_output=True, text=True, timeout=10)"
            ".returncode, os.getuid())")
    result = python_as_nobody(code, system.client_env(), timeout=20)
    assert result.stdout.split() == ["0", "65534"], result.stderr


_NOBODY_IMPORTS = textwrap.dedent("""
    import hashlib, json, os, sys
    from pathlib import Path
    import dbus_next, momservice
    package = Path(momservice.__file__).parent
    sources = {str(p.relative_to(package)): hashlib.sha256(p.read_bytes()).hexdigest()
               for p in sorted(package.rglob("*.py"))}
    try:
        open(package / "__init__.py", "a").close()
        writable = True
    except PermissionError:
        writable = False
    print(json.dumps({"uid": os.getuid(), "path": sys.path, "package": str(package),
                      "dbus_next": dbus_next.__file__, "sources": sources,
                      "writable": writable}))
""")


def test_nobody_runs_the_checkouts_code_wherever_the_checkout_is():
    """nobody's clients import this checkout's momservice and the venv's
    dbus_next (from a snapshot nobody can read, even when the checkout is in
    a 0700 folder), not the host's, and cannot change them."""
    import hashlib

    import momservice
    python = nobody_python()
    result = run_as_nobody(python.argv("-c", _NOBODY_IMPORTS), python.env(), timeout=30)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["uid"] == 65534
    package = Path(momservice.__file__).parent
    assert seen["sources"] == {
        str(p.relative_to(package)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(package.rglob("*.py"))}
    assert len(seen["sources"]) > 10
    assert seen["package"].startswith(f"{python.site}/")
    assert seen["dbus_next"].startswith(f"{python.site}/")
    assert not [p for p in seen["path"] if p.endswith(("site-packages", "dist-packages"))]
    assert seen["writable"] is False


# --------------------------------------------------------------------------
# What polkit answers (momd's authorization rests on these)


@pytest.mark.parametrize("flags", [0, ALLOW_USER_INTERACTION])
@pytest.mark.parametrize("action", ACTIONS)
def test_root_is_authorized(system, run, action, flags):
    assert run(_check(system.address, action, flags), 20) == (True, False, {})


def test_nobody_checking_itself_gets_a_challenge(system):
    python = nobody_python()
    result = run_as_nobody(python.argv("-c", _NOBODY_CHECK, *ACTIONS),
                           python.env(system.client_env()), timeout=40)
    assert result.returncode == 0, result.stderr
    answers = json.loads(result.stdout)
    assert len(answers) == 2 * len(ACTIONS)
    for action, flags, *answer in answers:
        assert answer == [False, True, {}], (action, flags, answer)


@pytest.mark.parametrize("flags", [0, ALLOW_USER_INTERACTION])
def test_root_checking_nobody_gets_a_challenge(system, run, flags):
    """The real case: momd (root) asks polkit about an unprivileged caller."""
    python = nobody_python()
    holder = subprocess.Popen(
        nobody_command(python.argv("-c", textwrap.dedent("""
            import asyncio, sys
            from dbus_next.aio import MessageBus
            from dbus_next.constants import BusType
            async def main():
                bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
                print(bus.unique_name, flush=True)
                await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
            asyncio.run(main())
        """))),
        env=nobody_env(python.env(system.client_env())), cwd="/", stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        name = _readline(holder, 20)
        assert name.startswith(":"), holder.stderr.read() if holder.poll() is not None else name
        for action in ACTIONS:
            assert run(_check(system.address, action, flags, subject=name), 20) == \
                (False, True, {})
    finally:
        holder.stdin.close()
        try:
            holder.wait(10)
        except subprocess.TimeoutExpired:
            holder.kill()
            holder.wait(10)


def _readline(process: subprocess.Popen, timeout: float) -> str:
    import select
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    return process.stdout.readline().strip() if ready else ""


# --------------------------------------------------------------------------
# Our bus policy (dbus/org.ovirt.mom1.conf) on the private bus


class _Probe(ServiceInterface):
    def __init__(self) -> None:
        super().__init__(f"{MOM}.Test")

    @method()
    def Echo(self, text: "s") -> "s":  # noqa: F821 (dbus-next signature)
        return text

    @signal()
    def Poked(self) -> "s":  # noqa: F821
        return "poked"


# nobody may not read the checkout: the names come spelled out in a header.
_NOBODY_CLIENT = f"MOM, PATH = {MOM!r}, {MANAGER_PATH!r}\n" + textwrap.dedent("""
    import asyncio, json, sys
    from dbus_next import Message, MessageType
    from dbus_next.aio import MessageBus
    from dbus_next.constants import BusType

    async def call(bus, **kw):
        reply = await bus.call(Message(destination=MOM, **kw))
        return reply.error_name if reply.message_type == MessageType.ERROR else "ok"

    async def main():
        bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
        out = {}
        reply = await bus.call(Message(
            destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus", member="RequestName",
            signature="su", body=[MOM, 0]))
        out["own"] = reply.error_name if reply.message_type == MessageType.ERROR else reply.body[0]
        out["method"] = await call(bus, path=PATH, interface=MOM + ".Test",
                                   member="Echo", signature="s", body=["hi"])
        out["introspect"] = await call(bus, path=PATH,
                                       interface="org.freedesktop.DBus.Introspectable",
                                       member="Introspect")
        out["properties"] = await call(bus, path=PATH,
                                       interface="org.freedesktop.DBus.Properties",
                                       member="GetAll", signature="s", body=[MOM + ".Test"])
        out["peer"] = await call(bus, path=PATH,
                                 interface="org.freedesktop.DBus.Peer", member="Ping")
        got = asyncio.get_running_loop().create_future()
        def on_message(msg):
            if msg.message_type == MessageType.SIGNAL and msg.member == "Poked" and not got.done():
                got.set_result(msg.body[0])
        bus.add_message_handler(on_message)
        await bus.call(Message(
            destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus", member="AddMatch", signature="s",
            body=[f"type='signal',sender='{MOM}'"]))
        print(json.dumps(out), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        try:
            print(json.dumps({"signal": await asyncio.wait_for(got, 10)}), flush=True)
        except asyncio.TimeoutError:
            print(json.dumps({"signal": None}), flush=True)

    asyncio.run(asyncio.wait_for(main(), 40))
""")


def test_only_root_owns_mom_and_everyone_may_call_it(system):
    async def serve_and_probe() -> tuple[dict, dict]:
        bus = await MessageBus(bus_address=system.address).connect()
        try:
            probe = _Probe()
            bus.export(MANAGER_PATH, probe)
            await bus.request_name(MOM)  # raises unless root may own it
            python = nobody_python()
            client = await asyncio.create_subprocess_exec(
                *nobody_command(python.argv("-c", _NOBODY_CLIENT)),
                env=nobody_env(python.env(system.client_env())), cwd="/",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE)
            try:
                first = await asyncio.wait_for(client.stdout.readline(), 30)
                assert first, (await client.stderr.read()).decode()
                probe.Poked()
                client.stdin.write(b"go\n")
                await client.stdin.drain()
                second = await asyncio.wait_for(client.stdout.readline(), 30)
                await asyncio.wait_for(client.wait(), 15)
            finally:
                if client.returncode is None:
                    client.kill()
                    await client.wait()
            return json.loads(first), json.loads(second)
        finally:
            bus.disconnect()

    calls, received = asyncio.run(asyncio.wait_for(serve_and_probe(), 60))
    assert calls == {
        "own": "org.freedesktop.DBus.Error.AccessDenied",
        "method": "ok", "introspect": "ok", "properties": "ok", "peer": "ok",
    }
    assert received == {"signal": "poked"}


def test_bus_activation_runs_the_exec_line_against_this_bus(tmp_path, run):
    """``mom_service_file`` swaps Exec; the activated process finds the bus."""
    marker = tmp_path / "activated"
    script = tmp_path / "fake_momd.py"
    script.write_text(textwrap.dedent(f"""
        import asyncio, os
        from dbus_next.aio import MessageBus
        from dbus_next.constants import BusType
        async def main():
            bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
            open({str(marker)!r}, "w").write(os.environ["DBUS_SYSTEM_BUS_ADDRESS"])
            await bus.request_name({MOM!r})
            await bus.wait_for_disconnect()
        asyncio.run(main())
    """))
    text = mom_service_file(f"{sys.executable} {script}")
    assert f"Exec={sys.executable} {script}" in text.splitlines()
    assert "SystemdService=momd.service" in text.splitlines()
    bus = PrivateSystemBus(tmp_path / "bus", service_files={f"{MOM}.service": text})
    with bus:
        async def ping():
            conn = await MessageBus(bus_address=bus.address).connect()
            try:
                return await conn.call(Message(
                    destination=MOM, path="/", interface="org.freedesktop.DBus.Peer",
                    member="Ping"))
            finally:
                conn.disconnect()

        reply = run(ping(), 40)
        assert reply.message_type == MessageType.METHOD_RETURN, reply.body
        # dbus-daemon sets it for what it activates (with the bus GUID appended).
        assert marker.read_text().split(",")[0] == bus.address
        pid = _owner_pid(bus)
        assert pid > 0
    # stop() took the activated service down with the bus.
    assert not _alive(pid)


def _owner_pid(bus: PrivateSystemBus) -> int:
    out = bus.call_bus("GetConnectionUnixProcessID", f"string:{MOM}")
    return int(out.split()[-1])


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# --------------------------------------------------------------------------
# Cleanup


def test_stop_restores_the_actions_directory_and_leaves_no_process(tmp_path):
    dest = POLKIT_ACTIONS_DIR / MOM_POLKIT_POLICY.name
    before = dest.read_bytes() if dest.exists() else None
    with system_bus_with_polkit(tmp_path) as system:
        assert dest.read_bytes() == MOM_POLKIT_POLICY.read_bytes()
        polkitd_pid = system.polkit.process.pid
        daemon_pid = system.bus.process.pid
        socket_dir = system.bus.runtime_dir
        assert socket_dir.stat().st_mode & 0o777 == 0o755
        system.polkit.stop()
        assert not system.polkit_running
        system.bus.wait_for_name(POLKIT_NAME, 10, owned=False)
    after = dest.read_bytes() if dest.exists() else None
    # Another fixture running concurrently may keep it installed; alone, the
    # directory is back as it was.
    if not _other_fixture_running():
        assert after == before
    assert not _alive(polkitd_pid) and not _alive(daemon_pid)
    assert not socket_dir.exists()


def _other_fixture_running() -> bool:
    """Another private bus is up (its socket directory exists)."""
    return any(Path("/tmp").glob("mom-bus-*"))
