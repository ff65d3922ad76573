"""Invariants of the shipped default policies (policies/*.policy), checked
with hypothesis over random hosts and guests.  They are meant to hold for
whatever set ships as the default.

The policies are evaluated by the real policy engine (PolicySet over
Entities, as the engine feeds them), several rounds in a row on the same
entities, so that what a policy keeps with SetVar (the guests' recent
peaks, their swap counters) carries over as in momd.  Sizes are KiB.

The configured floor (momd.conf ``balloon-floor``) is the balloon
controller's: it clamps every target into [max(balloon_min, floor),
balloon_max] (tests/controllers cover that); the policies themselves must
keep to [balloon_min, balloon_max].
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hypothesis import assume, given, settings, strategies as st

from momservice.policy import PolicySet
from momservice.policy.entity import Entity
from momservice.policy_files import find_policy_files, read_policy_texts

POLICY_DIR = Path(__file__).resolve().parent.parent / "policies"
MiB = 1024
GiB = 1024 * MiB
#: Rounds the balloons of a random host get to settle (each tight round
#: takes a share of the way; a few suffice).
SETTLE_ROUNDS = 30
#: balloon_host_reserve of 02-balloon.policy (checked against the file below).
HOST_RESERVE = 0.02


def load_defaults() -> PolicySet:
    return PolicySet(read_policy_texts(find_policy_files([POLICY_DIR])))


@dataclass
class SimGuest:
    """A guest's figures as its balloon driver would report them."""

    name: str
    maximum: float
    minimum: float
    cur: float
    used: float        # kernel and anonymous memory (not page cache, not free)
    cache: float
    rss: float
    swap_in: int = 0
    swap_out: int = 0

    def sample(self) -> dict:
        usable = max(0.0, self.cur - self.used)
        cache = min(self.cache, usable)
        return {"balloon_cur": self.cur, "balloon_max": self.maximum,
                "balloon_min": self.minimum, "mem_available": self.cur,
                "mem_unused": usable - cache, "mem_usable": usable,
                "disk_caches": cache, "major_fault": 0, "minor_fault": 0,
                "swap_in": self.swap_in, "swap_out": self.swap_out, "rss": self.rss}


def host_stats(total: float, free: float, held: float, **extra) -> dict:
    """A host sample: ``total`` KiB of RAM, ``free`` of it free (page cache
    included), ``held`` by the guests; KSM stopped."""
    stats = {"mem_available": total, "mem_free": free, "mem_unused": free / 2,
             "swap_in": 0, "swap_out": 0, "swap_total": GiB, "swap_usage": 0,
             "anon_pages": held, "mem_pressure_some": 0.0, "mem_pressure_full": 0.0,
             "ksm_run": 0, "ksm_pages_to_scan": 100, "ksm_sleep_millisecs": 20,
             "ksm_merge_across_nodes": 1, "ksm_pages_shared": 0, "ksm_pages_sharing": 0,
             "ksm_shareable": held, "cpu_count": 4}
    stats.update(extra)
    return stats


@st.composite
def hosts(draw):
    """A host and its guests, in any state: tight or not, guests anywhere
    in their range (or below their minimum)."""
    count = draw(st.integers(1, 6))
    guests = []
    for i in range(count):
        maximum = draw(st.integers(1, 16)) * GiB
        minimum = draw(st.sampled_from([0, 256 * MiB, maximum // 4, maximum // 2]))
        cur = draw(st.floats(0.1, 1.0)) * maximum
        used = draw(st.floats(0.05, 1.0)) * cur
        cache = draw(st.floats(0.0, 1.0)) * (cur - used)
        rss = draw(st.floats(0.1, 1.0)) * cur
        guests.append(SimGuest(f"g{i}", maximum, minimum, cur, used, cache, rss,
                               swap_in=draw(st.integers(0, 1000)),
                               swap_out=draw(st.integers(0, 1000))))
    total = sum(g.maximum for g in guests) / draw(st.floats(0.5, 4.0))
    held = sum(g.rss for g in guests)
    free = draw(st.floats(0.0, 1.0)) * max(0.0, total - held)
    host = host_stats(total, free, held,
                      swap_out=draw(st.sampled_from([0, 0, 100])),
                      mem_pressure_some=draw(st.sampled_from([0.0, 0.0, 2.0, 30.0])))
    return host, guests


class Round:
    """The entities momd would keep, fed one sample per round."""

    def __init__(self, guests: list[SimGuest]) -> None:
        self.host = Entity.host()
        self.guests = {g.name: Entity.guest({"name": g.name, "uuid": g.name}) for g in guests}

    def evaluate(self, policies: PolicySet, host: dict, guests: list[SimGuest],
                 params: dict | None = None) -> dict[str, float]:
        """One round; the balloon targets asked for, by guest name."""
        self.host.add_sample(host)
        for g in guests:
            self.guests[g.name].add_sample(g.sample())
        result = policies.evaluate(self.host, list(self.guests.values()), params)
        assert result.ok, result.error
        assert not result.guest_errors, result.guest_errors
        return {entity.name: controls["balloon_target"]
                for entity, controls in result.guest_controls.items()
                if "balloon_target" in controls}


def apply(host: dict, guests: list[SimGuest], targets: dict[str, float]) -> None:
    """The balloons reach their targets: an inflated balloon takes the
    guest's free pages and page cache (and, below what it uses, the rest)
    back to the host; a deflated one hands the guest free pages it has not
    touched yet."""
    for g in guests:
        if g.name not in targets:
            continue
        new = targets[g.name]
        if new < g.cur:
            g.used = min(g.used, new)
            g.cache = min(g.cache, new - g.used)
            given_back = max(0.0, g.rss - new)
            g.rss -= given_back
            host["mem_free"] += given_back
        g.cur = new


@settings(max_examples=40, deadline=None)
@given(hosts())
def test_targets_stay_within_minimum_and_maximum(state):
    host, guests = state
    policies = load_defaults()
    rounds = Round(guests)
    for _ in range(3):
        targets = rounds.evaluate(policies, host, guests)
        for g in guests:
            if g.name in targets:
                low = min(g.minimum, g.maximum)
                assert low - 1e-6 <= targets[g.name] <= g.maximum + 1e-6, (g, targets)
        apply(host, guests, targets)


@settings(max_examples=30, deadline=None)
@given(hosts())
def test_guest_below_its_minimum_is_raised_to_it(state):
    host, guests = state
    guests[0].minimum = guests[0].maximum // 2
    guests[0].cur = guests[0].minimum * 0.9
    guests[0].used = min(guests[0].used, guests[0].cur)
    guests[0].rss = min(guests[0].rss, guests[0].cur)
    targets = Round(guests).evaluate(load_defaults(), host, guests)
    assert targets.get("g0", 0) >= guests[0].minimum - 1e-6


@settings(max_examples=30, deadline=None)
@given(hosts())
def test_no_move_when_nothing_changes(state):
    """Once the balloons have settled where the policies asked (a tight
    host may take a few rounds to get there, a little at a time), and
    nothing in the guests or the host changed (no guest had to give up part
    of its working set), the next rounds ask for nothing."""
    host, guests = state
    policies = load_defaults()
    rounds = Round(guests)
    for _ in range(SETTLE_ROUNDS):
        targets = rounds.evaluate(policies, host, guests)
        if not targets:
            break
        # A balloon taken below its guest's working set changes the guest
        # (it swaps): that is not "nothing changes".
        assume(all(targets.get(g.name, g.cur) >= g.used for g in guests))
        apply(host, guests, targets)
    else:
        raise AssertionError(f"still moving after {SETTLE_ROUNDS} rounds: {targets}")
    assert rounds.evaluate(policies, host, guests) == {}
    assert rounds.evaluate(policies, host, guests) == {}


@settings(max_examples=30, deadline=None)
@given(hosts())
def test_balloon_disabled_never_shrinks(state):
    host, guests = state
    targets = Round(guests).evaluate(load_defaults(), host, guests,
                                     {"balloonEnabled": 0})
    for g in guests:
        if g.name in targets:
            assert targets[g.name] >= g.cur
    # and every guest not at its maximum is given it back
    assert all(targets.get(g.name) == g.maximum for g in guests
               if g.cur < g.maximum * 0.99)


@settings(max_examples=30, deadline=None)
@given(hosts())
def test_page_cache_goes_before_working_sets(state):
    """When the working sets fit in the host's budget, no balloon is asked
    below what its guest uses, however tight the host is."""
    host, guests = state
    host["mem_free"] = 0.0          # as tight as it gets
    host["mem_pressure_some"] = 30.0
    budget = sum(g.rss for g in guests) * 0.95 - HOST_RESERVE * host["mem_available"]
    needs = sum(min(g.maximum, max(g.minimum, g.used + max(64 * MiB, 0.08 * g.maximum)))
                for g in guests)
    if needs > budget:
        return
    targets = Round(guests).evaluate(load_defaults(), host, guests)
    for g in guests:
        if g.name in targets:
            assert targets[g.name] >= min(g.used, g.maximum) - 1e-6


def test_relief_gives_memory_back():
    """A host with plenty free gives its ballooned guests their maximum."""
    guests = [SimGuest(f"g{i}", 4 * GiB, 0, 1 * GiB, 512 * MiB, 256 * MiB, 1 * GiB)
              for i in range(4)]
    host = host_stats(32 * GiB, 28 * GiB, 4 * GiB)
    targets = Round(guests).evaluate(load_defaults(), host, guests)
    assert targets == {g.name: 4 * GiB for g in guests}


def test_pressure_shrinks_guests_with_page_cache():
    """A tight host takes page cache and free memory back, not working sets."""
    guests = [SimGuest(f"g{i}", 4 * GiB, 0, 4 * GiB, 1 * GiB, 2 * GiB, 3 * GiB)
              for i in range(4)]
    host = host_stats(13 * GiB, 256 * MiB, 12 * GiB)
    targets = Round(guests).evaluate(load_defaults(), host, guests)
    assert set(targets) == {g.name for g in guests}
    for g in guests:
        assert 1 * GiB < targets[g.name] < 4 * GiB


def roomy_with_limit(host: dict, guests: list[SimGuest], share: float) -> tuple[float, dict]:
    """Make ``host`` roomy (twice the guests' maxima, nothing pressing);
    the limit of ``share`` of the guests' maxima, and its parameters."""
    held = sum(g.rss for g in guests)
    host["mem_available"] = max(host["mem_available"], 2 * sum(g.maximum for g in guests))
    host["mem_free"] = host["mem_available"] - held
    host["swap_out"], host["mem_pressure_some"] = 0, 0.0
    limit = share * sum(g.maximum for g in guests)
    return limit, {"balloon_guests_limit": limit}


@settings(max_examples=30, deadline=None)
@given(hosts(), st.floats(0.1, 1.2))
def test_guests_limit_caps_the_balloons_on_a_roomy_host(state, share):
    """With balloon_guests_limit, the balloons settle within the limit (or
    at their minimums, when those alone exceed it) even on a host with
    memory to spare, short of each guest's deadband; a limit is never a
    reason to go below a minimum."""
    host, guests = state
    limit, params = roomy_with_limit(host, guests, share)
    policies = load_defaults()
    rounds = Round(guests)
    for _ in range(SETTLE_ROUNDS):
        targets = rounds.evaluate(policies, host, guests, params)
        for g in guests:
            if g.name in targets:
                assert targets[g.name] >= min(g.minimum, g.maximum) - 1e-6
        if not targets:
            break
        apply(host, guests, targets)
    floors = sum(min(g.minimum, g.maximum) for g in guests)
    band = sum(0.06 * g.maximum for g in guests)
    assert sum(g.cur for g in guests) <= max(limit, floors) + band + 1e-6, \
        ([(g.cur, g.minimum, g.maximum) for g in guests], limit)
    # Without the limit the same roomy host takes nothing from anyone.
    assert all(t >= g.cur for g in guests
               for t in [Round(guests).evaluate(policies, host, guests).get(g.name, g.cur)])


def test_host_reserve_is_the_policys():
    """The page-cache test above computes the budget with the policy's reserve."""
    text = (POLICY_DIR / "02-balloon.policy").read_text()
    assert f"(defvar balloon_host_reserve {HOST_RESERVE})" in text


def test_roomy_host_moves_no_balloon_down():
    """A host with more than the tight share free leaves balloons above
    their targets alone (memory a guest has not touched costs it nothing),
    and asks for them down once it is below."""
    def state(free):
        guests = [SimGuest(f"g{i}", 4 * GiB, 0, 4 * GiB, 512 * MiB, 1 * GiB, 1536 * MiB)
                  for i in range(4)]
        return host_stats(10 * GiB, free, 6 * GiB), guests

    host, guests = state(0.09 * 10 * GiB)
    assert Round(guests).evaluate(load_defaults(), host, guests) == {}
    host, guests = state(0.03 * 10 * GiB)
    targets = Round(guests).evaluate(load_defaults(), host, guests)
    assert set(targets) == {g.name for g in guests}
    assert all(t < 4 * GiB for t in targets.values())


def tight_round(rounds: Round, policies: PolicySet, guests: list[SimGuest]) -> dict:
    """One round on a host whose budget covers every working set but not
    every maximum (16 GiB of guests on 7 GiB, nothing free)."""
    host = host_stats(7 * GiB, 0.0, sum(g.rss for g in guests), mem_pressure_some=30.0)
    return rounds.evaluate(policies, host, guests)


def test_unseen_burst_is_held_like_a_seen_one():
    """A guest that never showed a peak is held, when the budget allows, as
    high (as a share of its maximum) as the guest that did: the next burst
    may be its first."""
    policies = load_defaults()
    burst = SimGuest("burst", 4 * GiB, 0, 4 * GiB, 3 * GiB, 0, 3 * GiB)
    quiet = SimGuest("quiet", 4 * GiB, 0, 4 * GiB, 512 * MiB, 0, 1 * GiB)
    others = [SimGuest(f"o{i}", 4 * GiB, 0, 4 * GiB, 512 * MiB, 0, 1 * GiB) for i in range(2)]
    guests = [burst, quiet, *others]
    rounds = Round(guests)
    # The burst is seen on a host with room to spare: nothing moves.
    roomy = host_stats(32 * GiB, 26 * GiB, sum(g.rss for g in guests))
    assert rounds.evaluate(policies, roomy, guests) == {}
    # It is over; then the host gets tight.
    burst.used, burst.rss = 512 * MiB, 3 * GiB
    targets = tight_round(rounds, policies, guests)
    assert set(targets) == {g.name for g in guests}
    # Everyone gets its working set and a share of the same peak level.
    for g in guests:
        assert targets[g.name] > g.used
    assert abs(targets["quiet"] - targets["burst"]) < 0.01 * GiB
    # Its own peak (working set and headroom, 840 MiB) would have left it
    # hardly more than that: the budget would have gone to the burst's peak.
    assert targets["quiet"] > 1 * GiB


# -- guests with a virtio-mem device --------------------------------------------------
#
# Such a guest is sized by its device, in the same budget: its size is its
# boot memory plus what the device has plugged, and the policy asks for
# virtio_mem_requested (the device's share), never a balloon target.


@dataclass
class SimVirtioGuest(SimGuest):
    """A guest with ``boot`` KiB of boot memory and a virtio-mem device of
    ``maximum - boot`` KiB, of which ``cur - boot`` is plugged; its balloon
    is not inflated (libvirt counts the device in ``balloon_max``)."""

    boot: float = 0.0
    block: int = 2 * MiB

    def sample(self) -> dict:
        sample = super().sample()
        sample.update(virtio_mem_max=self.maximum - self.boot, virtio_mem_block=self.block,
                      virtio_mem_requested=self.cur - self.boot,
                      virtio_mem_current=self.cur - self.boot)
        return sample


def controls(rounds: Round, policies: PolicySet, host: dict, guests: list[SimGuest],
             params: dict | None = None) -> dict[str, dict]:
    """One round; every control asked for, by guest name."""
    rounds.host.add_sample(host)
    for g in guests:
        rounds.guests[g.name].add_sample(g.sample())
    result = policies.evaluate(rounds.host, list(rounds.guests.values()), params)
    assert result.ok, result.error
    assert not result.guest_errors, result.guest_errors
    return {e.name: dict(c) for e, c in result.guest_controls.items() if c}


def sizes(guests: list[SimGuest], asked: dict[str, dict]) -> dict[str, float]:
    """The sizes the controls ask for: a balloon target, or boot memory plus
    the device's request (checked to be the only control of such a guest)."""
    by_name = {g.name: g for g in guests}
    result = {}
    for name, c in asked.items():
        g = by_name[name]
        if isinstance(g, SimVirtioGuest):
            assert set(c) == {"virtio_mem_requested"}, c
            result[name] = g.boot + c["virtio_mem_requested"]
        else:
            assert set(c) == {"balloon_target"}, c
            result[name] = c["balloon_target"]
    return result


@st.composite
def mixed_hosts(draw):
    """A host of hosts() whose guests have a virtio-mem device or not."""
    host, guests = draw(hosts())
    mixed: list[SimGuest] = []
    for g in guests:
        if draw(st.booleans()):
            boot = draw(st.sampled_from([256 * MiB, g.maximum // 4, g.maximum // 2]))
            cur = max(boot, g.cur)
            mixed.append(SimVirtioGuest(g.name, g.maximum, g.minimum, cur, min(g.used, cur),
                                        g.cache, min(g.rss, cur), g.swap_in, g.swap_out,
                                        boot=boot))
        else:
            mixed.append(g)
    return host, mixed


@settings(max_examples=40, deadline=None)
@given(mixed_hosts())
def test_virtio_mem_requests_stay_within_the_device(state):
    host, guests = state
    policies = load_defaults()
    rounds = Round(guests)
    for _ in range(3):
        asked = controls(rounds, policies, host, guests)
        targets = sizes(guests, asked)
        for g in guests:
            if isinstance(g, SimVirtioGuest) and g.name in asked:
                assert 0 <= asked[g.name]["virtio_mem_requested"] <= g.maximum - g.boot + 1e-6
            if g.name in targets:
                low = min(max(g.minimum, getattr(g, "boot", 0)), g.maximum)
                assert low - 1e-6 <= targets[g.name] <= g.maximum + 1e-6, (g, targets)
        apply(host, guests, targets)


@settings(max_examples=30, deadline=None)
@given(mixed_hosts())
def test_virtio_mem_guests_given_their_device_back_when_ballooning_is_off(state):
    host, guests = state
    asked = controls(Round(guests), load_defaults(), host, guests, {"balloonEnabled": 0})
    targets = sizes(guests, asked)
    for g in guests:
        if g.cur < g.maximum * 0.99:
            assert targets.get(g.name) == g.maximum, (g, asked)


def test_relief_grows_virtio_mem_guests_to_their_maximum():
    """A roomy host plugs every virtio-mem guest's whole device, beside
    ballooned guests given their maximum back."""
    guests = [SimVirtioGuest(f"v{i}", 4 * GiB, 0, 1 * GiB, 512 * MiB, 256 * MiB, 1 * GiB,
                             boot=1 * GiB) for i in range(2)]
    guests += [SimGuest(f"b{i}", 4 * GiB, 0, 1 * GiB, 512 * MiB, 256 * MiB, 1 * GiB)
               for i in range(2)]
    host = host_stats(32 * GiB, 28 * GiB, 4 * GiB)
    asked = controls(Round(guests), load_defaults(), host, guests)
    assert asked == {"v0": {"virtio_mem_requested": 3 * GiB},
                     "v1": {"virtio_mem_requested": 3 * GiB},
                     "b0": {"balloon_target": 4 * GiB}, "b1": {"balloon_target": 4 * GiB}}


def test_pressure_unplugs_page_cache_not_working_sets_nor_boot_memory():
    """A tight host takes page cache and free memory back from virtio-mem
    guests as from ballooned ones, never below the working set, and never
    asks a device for less than nothing (the boot memory stays)."""
    guests = [SimVirtioGuest(f"v{i}", 4 * GiB, 0, 4 * GiB, 1 * GiB, 2 * GiB, 3 * GiB,
                             boot=512 * MiB) for i in range(2)]
    guests += [SimGuest(f"b{i}", 4 * GiB, 0, 4 * GiB, 1 * GiB, 2 * GiB, 3 * GiB)
               for i in range(2)]
    host = host_stats(13 * GiB, 256 * MiB, 12 * GiB)
    asked = controls(Round(guests), load_defaults(), host, guests)
    targets = sizes(guests, asked)
    assert set(targets) == {g.name for g in guests}
    for g in guests:
        assert 1 * GiB < targets[g.name] < 4 * GiB
    # The same share for both kinds: one budget, the same levels.
    assert abs(targets["v0"] - targets["b0"]) < 1 * MiB

    # A guest using less than its boot memory still keeps all of it.
    small = SimVirtioGuest("small", 4 * GiB, 0, 4 * GiB, 128 * MiB, 0, 3 * GiB, boot=2 * GiB)
    host = host_stats(5 * GiB, 0.0, 3 * GiB, mem_pressure_some=30.0)
    asked = controls(Round([small]), load_defaults(), host, [small])
    assert asked["small"]["virtio_mem_requested"] >= 0
    assert sizes([small], asked)["small"] >= small.boot


@settings(max_examples=30, deadline=None)
@given(mixed_hosts(), st.floats(0.1, 1.2))
def test_guests_limit_caps_virtio_mem_guests_too(state, share):
    """balloon_guests_limit counts what the devices have plugged: the guests
    settle within it (or at their floors, boot memory included)."""
    host, guests = state
    limit, params = roomy_with_limit(host, guests, share)
    policies = load_defaults()
    rounds = Round(guests)
    for _ in range(SETTLE_ROUNDS):
        targets = sizes(guests, controls(rounds, policies, host, guests, params))
        if not targets:
            break
        apply(host, guests, targets)
    floors = sum(min(max(g.minimum, getattr(g, "boot", 0)), g.maximum) for g in guests)
    band = sum(0.06 * g.maximum for g in guests)
    assert sum(g.cur for g in guests) <= max(limit, floors) + band + 1e-6, \
        ([(g.cur, g.minimum, g.maximum) for g in guests], limit)
