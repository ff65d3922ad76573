"""The Cockpit page in a real browser, on a real Cockpit, over a real bus.

A private system bus with the real polkitd, momd on a simulated host
(sim://), Debian's cockpit-ws with a local session (Debian's cockpit-bridge
reaches the test's bus through DBUS_SYSTEM_BUS_ADDRESS and finds the page in
a staged copy of cockpit/ through XDG_DATA_DIRS), and Debian's Chromium
driven by Playwright.  What the page shows is compared with what momd says
over the bus (momctl); changes made over the bus by the test must show up
without a reload.  Every page must load without a console error or an
uncaught exception (a refused inline style or script would be one).

The bridge runs as root (the administrator) or, for the read-only checks,
as nobody, whom polkit refuses every change.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from momservice.simulator.simulation import guest_uuid
from tests.helpers import cockpit_ws
from tests.helpers.cockpit_ws import CockpitWs, chromium_path, staged_page
from tests.helpers.libvirt_node import domain_xml, guest_specs
from tests.helpers.momd_process import REPO, Momd, momctl, momd_config
from tests.helpers.polling import wait_until
from tests.helpers.private_bus import skip_reason as bus_skip_reason
from tests.helpers.private_bus import system_bus_with_polkit

GUESTS = ("sim-guest-01", "sim-guest-02", "sim-guest-03")
HOST_MIB = 6144
URI = f"sim:///?guests={len(GUESTS)}&seed=1&host_mib={HOST_MIB}"
WAIT_MS = 60_000  # generous: the machine is shared

_reason = bus_skip_reason() or cockpit_ws.skip_reason()
pytestmark = [pytest.mark.skipif(_reason is not None, reason=_reason or ""),
              pytest.mark.timeout(300)]


def momctl_json(system, *args: str):
    result = momctl(system, *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def kib_text(kib: int) -> str:
    """The page's own formatting (cockpit/format.js), for the sizes used here."""
    value, unit = float(kib), 0
    units = ["KiB", "MiB", "GiB", "TiB"]
    while abs(value) >= 1024 and unit < len(units) - 1:
        value /= 1024
        unit += 1
    digits = 0 if unit == 0 or abs(value) >= 100 else 1
    return f"{value:.{digits}f} {units[unit]}"


# --------------------------------------------------------------------------
# Fixtures


def _momd(system, tmp: Path, uri: str) -> Momd:
    # The engine runs on request only (EvaluateNow), so that what the page
    # shows is what the test set; statistics are collected every second.
    return Momd(system, momd_config(tmp, uri, engine_interval=3600, collect_interval=1.0),
                tmp / "momd.log")


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    """The bus with polkitd, momd on sim://, and Cockpit serving the page as root."""
    tmp = tmp_path_factory.mktemp("cockpit")
    with system_bus_with_polkit(tmp / "bus") as system:
        momd = _momd(system, tmp, URI)
        try:
            with staged_page() as data_dir, \
                    CockpitWs(data_dir, system.client_env(), tmp / "cockpit-ws.log") as ws:
                yield SimpleNamespace(system=system, momd=momd, ws=ws, data_dir=data_dir, tmp=tmp)
        finally:
            momd.stop()
    assert "Traceback" not in momd.log_text()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        # As root Chromium needs --no-sandbox; nothing but our page is loaded.
        launched = playwright.chromium.launch(executable_path=str(chromium_path()),
                                              args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


class WatchedPage:
    """A browser tab whose console errors and uncaught exceptions are kept."""

    def __init__(self, browser, base_url: str) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 1000})
        self.page = self.context.new_page()
        self.page.set_default_timeout(WAIT_MS)
        self.base_url = base_url
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(f"console: {m.text}")
                     if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))

    def open(self, fragment: str = "") -> None:
        self.page.goto(self.base_url + fragment)
        self.page.wait_for_selector("body[data-loaded='1']")

    def assert_clean(self) -> None:
        assert self.errors == [], "\n".join(self.errors)

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def tab(browser, host):
    watched = WatchedPage(browser, host.ws.page_url())
    try:
        yield watched
        watched.assert_clean()
    finally:
        watched.close()


def guest_rows(page) -> list[dict]:
    return page.eval_on_selector_all("#guest-rows tr", """rows => rows.map(tr => ({
        name: tr.dataset.name,
        current: Number(tr.querySelector('.guest-balloon').dataset.current),
        target: Number(tr.querySelector('.guest-balloon').dataset.target),
        maximum: Number(tr.querySelector('.guest-balloon').dataset.maximum),
        label: tr.querySelector('.mom-bar-label').textContent,
        free: tr.querySelector('.guest-free').textContent,
        age: tr.querySelector('.guest-age').textContent,
    }))""")


def bus_guests(system) -> dict[str, dict]:
    return {g["Name"]: g for g in momctl_json(system, "guests")}


# --------------------------------------------------------------------------
# Tests


def test_the_manifest_puts_the_page_in_cockpits_menu_as_memory(host):
    manifests = host.ws.manifests()
    assert manifests["mom"]["menu"]["index"]["label"] == "Memory"
    # Cockpit serves the page's files from the staged install.
    for name in ("index.html", "mom.js", "mom.css", "chart.js", "format.js", "policies.js"):
        assert (host.data_dir / "cockpit" / "mom" / name).is_file(), name


def test_every_guest_and_the_host_figures_appear(tab, host, keep_artifact):
    tab.open()
    page = tab.page
    page.wait_for_function(f"() => document.querySelectorAll('#guest-rows tr').length === {len(GUESTS)}")
    page.wait_for_function("() => document.getElementById('host-mem-total').dataset.kib !== undefined")
    rows = guest_rows(page)
    on_bus = bus_guests(host.system)
    assert [r["name"] for r in rows] == list(GUESTS) == sorted(on_bus)
    for row in rows:
        guest = on_bus[row["name"]]
        assert row["maximum"] == guest["BalloonMaximum"]
        assert kib_text(guest["BalloonMaximum"]) in row["label"]
        assert row["age"].endswith(" s"), row
        assert row["free"] != "–" and row["free"].endswith("iB"), row
    # Every figure of the host, KSM and the service has its value.
    figures = page.eval_on_selector_all(".mom-figures dd", "dds => dds.map(d => [d.id, d.textContent])")
    unset = [id_ for id_, text in figures if text in ("", "–") and not id_.startswith("guest-")]
    assert not unset, unset
    status = momctl_json(host.system, "status")
    assert int(page.get_attribute("#host-mem-total", "data-kib")) == status["host"]["MemTotal"]
    assert page.text_content("#host-mem-total") == kib_text(HOST_MIB * 1024)
    assert page.text_content("#svc-hypervisor").startswith(URI)
    assert page.text_content("#ksm-state") in ("stopped", "running", "unmerging")
    assert page.text_content("#svc-guests") == str(len(GUESTS))
    # The charts have the past (GetHistory) and go on with what momd publishes.
    for chart in ("chart-host-memory", "chart-host-pressure"):
        page.wait_for_function(
            f"() => Number(document.querySelector('#{chart} polyline').dataset.points) >= 3")
    assert page.is_hidden("#access-banner")
    shot = host.tmp / "cockpit-overview.png"
    page.screenshot(path=str(shot), full_page=True)
    keep_artifact(shot)


def test_a_balloon_change_shows_up_without_reload(tab, host):
    tab.open()
    page = tab.page
    page.wait_for_selector("#guest-rows tr[data-name='sim-guest-02']")
    page.evaluate("window.momTestMarker = 'still the same page'")
    guest = bus_guests(host.system)["sim-guest-02"]
    target = guest["BalloonMaximum"] // 2
    if target == guest["BalloonTarget"]:
        target -= 65536
    moved = momctl(host.system, "balloon", "sim-guest-02", str(target))
    assert moved.returncode == 0, moved.stderr
    page.wait_for_function(
        "t => document.querySelector(\"#guest-rows tr[data-name='sim-guest-02'] .guest-balloon\")"
        ".dataset.target === String(t)", arg=target)
    label = page.text_content("#guest-rows tr[data-name='sim-guest-02'] .mom-bar-label")
    assert f"/ {kib_text(target)} /" in label
    # The simulated balloon follows the target: the current size moves too.
    page.wait_for_function(
        "t => document.querySelector(\"#guest-rows tr[data-name='sim-guest-02'] .guest-balloon\")"
        ".dataset.current === String(t)", arg=target)
    assert page.evaluate("window.momTestMarker") == "still the same page"


def test_a_guests_page_plots_its_history(tab, host, keep_artifact):
    tab.open()
    page = tab.page
    page.click("#guest-rows tr[data-name='sim-guest-01'] a")
    page.wait_for_function("() => document.getElementById('guest-name').textContent === 'sim-guest-01'")
    assert page.is_hidden("#page-overview") and page.is_visible("#page-guest")
    assert page.text_content("#guest-uuid") == guest_uuid("sim-guest-01")
    assert page.is_hidden("#guest-gone")
    guest = bus_guests(host.system)["sim-guest-01"]
    assert page.text_content("#guest-balloon-max") == kib_text(guest["BalloonMaximum"])
    page.wait_for_function(
        "() => Number(document.querySelector('#chart-guest-memory polyline.mom-s-free').dataset.points) >= 3")
    page.wait_for_function(
        "() => Number(document.querySelector('#chart-guest-swap polyline').dataset.points) >= 3")
    shot = host.tmp / "cockpit-guest.png"
    page.screenshot(path=str(shot), full_page=True)
    keep_artifact(shot)
    page.click("text=All guests")
    page.wait_for_selector("#page-overview:not([hidden])")


#: A policy that shrinks sim-guest-03 by 64 MiB from its line 3: last in
#: the order of names, its Control call wins over 02-balloon's.
EXPLAINED_POLICY = """(with Guests guest
  (if (== (guest.Prop "name") "sim-guest-03")
      (guest.Control "balloon_target" (- guest.balloon_cur 65536))
      nil))
"""


def test_a_guests_page_explains_why_it_shrank(tab, host, keep_artifact, tmp_path):
    tab.open()
    page = tab.page
    page.click("#guest-rows tr[data-name='sim-guest-03'] a")
    page.wait_for_function("() => document.getElementById('guest-name').textContent === 'sim-guest-03'")
    page.wait_for_selector("#guest-explain:not([hidden])")
    policy = tmp_path / "90-explained.policy"
    policy.write_text(EXPLAINED_POLICY)
    stored = momctl(host.system, "policy", "set", "90-explained", str(policy))
    assert stored.returncode == 0, stored.stderr
    try:
        evaluated = momctl(host.system, "evaluate")
        assert evaluated.returncode == 0, evaluated.stderr
        # Shown without a reload: the page follows ControlsApplied.
        page.wait_for_selector("#guest-explain .mom-explain-where:has-text('policy 90-explained, line 3')")
        text = page.text_content("#guest-explain")
        # The page tells what momd recorded (the balloon may still be moving:
        # where it stood is what the policy read, not what the test saw).
        (change,) = momctl_json(host.system, "explain", "sim-guest-03")["records"][-1]["changes"]
        assert change["to"] == change["from"] - 65536
        assert f"balloon_target: {kib_text(change['from'])} → {kib_text(change['to'])}" in text
        assert "(−64.0 MiB)" in text
        assert "90-explained.policy:3" in text   # the stored policy's file
        assert f"balloon_cur {kib_text(change['from'])}" in text
        shot = host.tmp / "cockpit-guest-explain.png"
        page.locator("#guest-explain").screenshot(path=str(shot))
        keep_artifact(shot)
    finally:
        deleted = momctl(host.system, "policy", "delete", "90-explained")
        assert deleted.returncode == 0, deleted.stderr


def _new_policy(page, name: str, text: str) -> None:
    page.fill("#new-policy-name", name)
    page.click("#new-policy-form button[type=submit]")
    page.wait_for_function("n => document.getElementById('editor-title').textContent === n", arg=name)
    page.fill("#editor-text", text)
    page.click("#policy-save")


BROKEN_SYNTAX = "# a policy with one parenthesis too many\n(defvar a 1)\n(defvar b (+ a 2)))\n(defvar c 3)\n"
FAILS_WHEN_RUN = "(defvar a 1)\n\n(defvar b (no_such_function a))\n"


@pytest.mark.parametrize("text,error", [(BROKEN_SYNTAX, "PolicySyntax"),
                                        (FAILS_WHEN_RUN, "PolicyFailed")],
                         ids=["syntax", "failing-evaluation"])
def test_a_refused_policy_shows_its_line(tab, host, keep_artifact, text, error):
    tab.open("#/policies")
    page = tab.page
    page.wait_for_selector(".mom-policy-name[data-name='02-balloon']")
    _new_policy(page, "90-refused", text)
    page.wait_for_selector("#editor-message.mom-danger")
    message = page.text_content("#editor-message")
    assert message.startswith(f"{error}:") and "on line 3" in message, message
    assert page.eval_on_selector_all(".mom-error-line", "els => els.map(e => e.textContent)") == ["3"]
    assert page.is_visible("#editor-error-band")
    # Editing the text clears the mark; the refused policy is not active.
    assert "90-refused" not in momctl_json(host.system, "policy", "list")["active"]
    if error == "PolicySyntax":
        shot = host.tmp / "cockpit-refused-policy.png"
        page.screenshot(path=str(shot), full_page=True)
        keep_artifact(shot)
    page.type("#editor-text", " ")
    assert page.eval_on_selector_all(".mom-error-line", "els => els.length") == 0


def test_policies_are_saved_deleted_and_reset(tab, host):
    tab.open("#/policies")
    page = tab.page
    page.wait_for_selector(".mom-policy-name[data-name='02-balloon']")
    _new_policy(page, "80-from-cockpit", "(defvar from_cockpit 1)\n")
    page.wait_for_selector("#editor-message.mom-success")
    listing = momctl_json(host.system, "policy", "list")
    assert "80-from-cockpit" in listing["active"]
    assert listing["policies"]["80-from-cockpit"] == "(defvar from_cockpit 1)\n"

    page.click(".mom-policy-name[data-name='80-from-cockpit']")
    page.click("#policy-delete")
    page.click("#policy-delete")  # the second click confirms
    wait_until(lambda: "80-from-cockpit" not in momctl_json(host.system, "policy", "list")["active"],
               "the policy to be deleted")
    page.wait_for_selector(".mom-policy-name[data-name='80-from-cockpit']", state="detached")

    _new_policy(page, "81-from-cockpit", "(defvar from_cockpit 2)\n")
    page.wait_for_selector(".mom-policy-name[data-name='81-from-cockpit']:not(:has-text('new'))")
    assert "81-from-cockpit" in momctl_json(host.system, "policy", "list")["active"]
    page.click("#policies-reset")
    page.click("#policies-reset")
    wait_until(lambda: momctl_json(host.system, "policy", "list")["active"]
               == ["00-defines", "02-balloon", "03-ksm"], "the reset to the files")
    page.wait_for_selector(".mom-policy-name[data-name='81-from-cockpit']", state="detached")


def test_parameters_are_shown_and_set(tab, host):
    tab.open("#/policies")
    page = tab.page
    page.fill("#param-name", "balloon_band")
    page.fill("#param-value", "0.07")
    page.click("#param-form button[type=submit]")
    page.wait_for_selector("#param-rows tr[data-name='balloon_band']")
    assert page.text_content("#param-rows tr[data-name='balloon_band'] .param-value") == "0.07"
    assert page.text_content("#param-rows tr[data-name='balloon_band'] .param-type") == "d"
    assert momctl_json(host.system, "params")["balloon_band"] == 0.07
    # Set over the bus: the table follows.
    assert momctl(host.system, "params", "set", "balloon_tight=0.11").returncode == 0
    page.wait_for_selector("#param-rows tr[data-name='balloon_tight']")


def test_evaluate_now_dry_run_shows_what_would_change(tab, host, tmp_path):
    # A policy that wants every balloon 64 MiB under its maximum: a known answer.
    policy = tmp_path / "95-all-near-max.policy"
    policy.write_text('(with Guests g (g.Control "balloon_target" (- g.balloon_max 65536)))\n')
    assert momctl(host.system, "policy", "set", "95-all-near-max", str(policy)).returncode == 0
    try:
        before = {name: g["BalloonTarget"] for name, g in bus_guests(host.system).items()}
        tab.open("#/policies")
        page = tab.page
        page.wait_for_selector(".mom-policy-name[data-name='95-all-near-max']")
        page.click("#evaluate-dry-run")
        page.wait_for_selector("#evaluation:not([hidden])")
        rows = page.eval_on_selector_all("#evaluation-rows tr", """rows => rows.map(tr => ({
            object: tr.dataset.object, control: tr.dataset.control,
            next: tr.lastElementChild.textContent }))""")
        balloon_rows = [r for r in rows if r["control"] == "balloon_target"]
        on_bus = bus_guests(host.system)
        assert sorted(r["object"] for r in balloon_rows) == list(GUESTS)
        for row in balloon_rows:
            assert row["next"] == kib_text(on_bus[row["object"]]["BalloonMaximum"] - 65536)
        assert "dry run" in page.text_content("#evaluate-message")
        # A dry run: nothing was applied.
        assert {name: g["BalloonTarget"] for name, g in on_bus.items()} == before
    finally:
        momctl(host.system, "policy", "delete", "95-all-near-max")


@pytest.fixture(scope="module")
def read_only_ws(host):
    """Cockpit as nobody: no administrative access, and polkit refuses nobody."""
    with CockpitWs(host.data_dir, host.system.client_env(), host.tmp / "cockpit-ws-nobody.log",
                   as_nobody=True) as ws:
        yield ws


def test_without_administrative_access_the_page_is_read_only_and_says_so(browser, host,
                                                                        read_only_ws,
                                                                        keep_artifact):
    watched = WatchedPage(browser, read_only_ws.page_url())
    try:
        watched.open()
        page = watched.page
        # Reading is open to everyone: the guests are there.
        page.wait_for_function(f"() => document.querySelectorAll('#guest-rows tr').length === {len(GUESTS)}")
        page.wait_for_selector("body[data-access='read-only']")
        assert page.is_visible("#access-banner")
        assert "Read only" in page.text_content("#access-banner")
        page.click("#tab-policies")
        page.wait_for_selector(".mom-policy-name[data-name='02-balloon']")
        page.click(".mom-policy-name[data-name='02-balloon']")
        assert page.get_attribute("#editor-text", "readonly") is not None
        for button in ("#evaluate-dry-run", "#policies-reset", "#policies-reload", "#policy-delete",
                       "#param-form button[type=submit]"):
            assert page.is_disabled(button), button
        shot = host.tmp / "cockpit-read-only.png"
        page.screenshot(path=str(shot), full_page=True)
        keep_artifact(shot)
        watched.assert_clean()
    finally:
        watched.close()


@contextlib.contextmanager
def page_on(tmp: Path, uri: str):
    """A bus of its own (the module's momd owns the name on the shared one),
    momd on ``uri`` and Cockpit serving the page: yields (system, momd, ws)."""
    with system_bus_with_polkit(tmp / "bus") as system:
        momd = _momd(system, tmp, uri)
        try:
            with staged_page() as data_dir, \
                    CockpitWs(data_dir, system.client_env(), tmp / "cockpit-ws.log") as ws:
                yield system, momd, ws
        finally:
            momd.stop()


def test_guests_appear_and_disappear_as_the_hypervisor_reports_them(browser, private_libvirtd,
                                                                     tmp_path):
    """InterfacesAdded / InterfacesRemoved: a guest started on a private
    libvirtd (test driver) gets its row, and loses it when destroyed."""
    import libvirt

    uri = private_libvirtd.uri()
    spec = guest_specs(1, prefix="newcomer")[0]
    with page_on(tmp_path, uri) as (system, _, ws):
        watched = WatchedPage(browser, ws.page_url())
        conn = libvirt.open(uri)
        try:
            watched.open()
            page = watched.page
            before = page.eval_on_selector_all("#guest-rows tr", "rows => rows.map(r => r.dataset.name)")
            assert spec.name not in before
            domain = conn.createXML(domain_xml(spec), 0)
            page.wait_for_selector(f"#guest-rows tr[data-name='{spec.name}']")
            # Its statistics follow with momd's next collection.
            page.wait_for_function(
                "([name, kib]) => document.querySelector(`#guest-rows tr[data-name='${name}'] "
                ".guest-balloon`).dataset.maximum === String(kib)", arg=[spec.name, spec.memory_kib])
            domain.destroy()
            page.wait_for_selector(f"#guest-rows tr[data-name='{spec.name}']", state="detached")
            assert page.eval_on_selector_all("#guest-rows tr", "rows => rows.map(r => r.dataset.name)") \
                == before
            watched.assert_clean()
        finally:
            conn.close()
            watched.close()


def test_the_page_says_when_momd_stops_and_follows_its_restart(browser, tmp_path):
    with page_on(tmp_path, URI) as (system, momd, ws):
        watched = WatchedPage(browser, ws.page_url())
        try:
            watched.open()
            page = watched.page
            page.wait_for_selector("#guest-rows tr")
            assert page.is_hidden("#service-error")
            momd.stop()
            page.wait_for_selector("#service-error:not([hidden])")
            assert "momd is not running" in page.text_content("#service-error")
            page.wait_for_selector("#guest-rows tr", state="detached")
            # Started again: the page follows without a reload.
            again = _momd(system, tmp_path, URI)
            try:
                page.wait_for_selector("#service-error", state="hidden")
                page.wait_for_function(
                    f"() => document.querySelectorAll('#guest-rows tr').length === {len(GUESTS)}")
            finally:
                again.stop()
            watched.assert_clean()
        finally:
            watched.close()


def test_load_time_with_100_guests(browser, tmp_path, measure, keep_artifact):
    """Measured, not asserted: from navigation until all 100 rows and the host are shown."""
    with page_on(tmp_path, "sim:///?guests=100&seed=3") as (system, _, ws):
        watched = WatchedPage(browser, ws.page_url())
        try:
            times = []
            for _ in range(3):
                start = time.monotonic()
                watched.page.goto(ws.page_url())
                watched.page.wait_for_function(
                    "() => document.querySelectorAll('#guest-rows tr').length === 100 && "
                    "document.getElementById('host-mem-total').dataset.kib !== undefined && "
                    "!document.querySelector('#guest-rows tr .guest-age').textContent.startsWith('–')")
                times.append(time.monotonic() - start)
            rows = guest_rows(watched.page)
            # In the order of their names, numbers as numbers.
            assert [r["name"] for r in rows] == [f"sim-guest-{i:02d}" for i in range(1, 101)]
            shot = tmp_path / "cockpit-100-guests.png"
            watched.page.screenshot(path=str(shot))
            keep_artifact(shot)
            watched.assert_clean()
        finally:
            watched.close()
    measure("page load with 100 guests (first, then reloads)",
            ", ".join(f"{t:.2f} s" for t in times) + f"; median {statistics.median(times):.2f} s")
