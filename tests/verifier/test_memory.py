"""The memory phase's checks, timing and bounds (verifier/memory.py): an honest local play passes, every
way of tampering with an opened lane is named, and the stated bounds hold for the claims the issue names."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from gpuproof.kernels import memory
from gpuproof.kernels.memory import MemoryPlan
from gpuproof.kernels.spec import ChallengeParams
from gpuproof.verifier import memory as vm
from gpuproof.verifier.profiles import load_profiles
from gpuproof.verifier.timing import TimingConfig, size_challenge
from hypothesis import given, settings
from hypothesis import strategies as st

PROFILES = load_profiles()
GPUS = [k for k, p in PROFILES.items() if p.arch != "cpu"]


@pytest.fixture(scope="module")
def play() -> memory.LocalPlay:
    params = ChallengeParams(bytes(range(32)), 32, 512, 64, 4)
    return memory.play_local(MemoryPlan(params, 3, 48, 16, 6), nonce=bytes(16))


def check(play, **changes):
    args = {"roots": play.roots, "nonce": play.nonce, "walk_root": play.walk_root, "drawn": play.drawn,
            "openings": play.openings} | changes
    vm.check_lanes(play.plan, **args)


def rejected(play, **changes) -> vm.MemoryRejected:
    with pytest.raises(vm.MemoryRejected) as err:
        check(play, **changes)
    return err.value


def test_honest_play_passes(play):
    check(play)
    finding = vm.judge_memory(play.plan, PROFILES["cpu-reference"], play.roots, play.nonce, play.walk_root,
                              play.drawn, play.openings, walk_s=0.01)
    assert finding.passed and finding.capacity == "holds-table" and finding.failure is None


def test_a_changed_leaf_byte_fails_its_path(play):
    o = play.openings[2]
    leaf = bytearray(o.leaves[5])
    leaf[100] ^= 1
    bad = dataclasses.replace(o, leaves=o.leaves[:5] + (bytes(leaf),) + o.leaves[6:])
    err = rejected(play, openings=play.openings[:2] + [bad] + play.openings[3:])
    assert err.reason == "bad-leaf-path" and "step 5" in err.detail


def test_lane_faked_from_its_first_missing_leaf_is_caught(play):
    """A cheater walks honestly until a leaf it lacks, then sends another (committed) leaf: the verifier
    derives the address itself, so the path is for the wrong index."""
    o = play.openings[0]
    swapped = dataclasses.replace(o, leaves=o.leaves[:3] + (o.leaves[4],) + o.leaves[4:],
                                  leaf_paths=o.leaf_paths[:3] + (o.leaf_paths[4],) + o.leaf_paths[4:])
    if swapped.leaves[3] != o.leaves[3]:
        assert rejected(play, openings=[swapped] + play.openings[1:]).reason == "bad-leaf-path"


def test_wrong_state_and_wrong_nonce(play):
    o = play.openings[1]
    # another nonce walks elsewhere at once: the first leaf sent is not at the address the verifier derives
    assert rejected(play, nonce=bytes(range(16))).reason == "bad-leaf-path"
    fake = dataclasses.replace(o, state=bytes(16))
    assert rejected(play, openings=[play.openings[0], fake] + play.openings[2:]).reason == "bad-lane-path"


def test_skipped_lane_committed_as_garbage_fails():
    """Lanes skipped: the prover commits made-up states for some lanes; an opened one cannot match."""
    params = ChallengeParams(bytes(range(32)), 32, 512, 64, 4)
    plan = MemoryPlan(params, 3, 16, 8, 16)
    play = memory.play_local(plan, nonce=bytes(16), drawn=list(range(16)))
    prover_states = np.zeros((16, 4), dtype=np.uint32)  # an honest walk of lanes 0..7, garbage for 8..15
    from gpuproof.kernels.reference import CpuBackend, round_tree
    from gpuproof.kernels.spec import prev_root_of

    backend, cs = CpuBackend(), []
    for r in range(params.rounds):
        if r >= plan.first_round:
            cs.append(backend.round_c(params, r, prev_root_of(play.roots, r)))
    prover = memory.MemoryProver.from_rounds(plan, cs)
    wk = memory.walk_key(params.seed, play.roots[-1], play.nonce)
    prover_states[:8] = memory.walk(plan, prover.table, wk, np.arange(8, dtype=np.uint64))
    prover.states, prover.tree = prover_states, memory.lane_tree(prover_states)
    assert round_tree(cs[-1]).root == play.roots[-1]
    honest = [dataclasses.replace(prover.open(lane, wk)) for lane in range(8)]
    check(play, walk_root=prover.tree.root, drawn=list(range(8)), openings=honest)
    with pytest.raises(AssertionError):  # the prover cannot even produce an opening for a skipped lane
        prover.open(9, wk)


def test_missing_or_misordered_lanes(play):
    assert rejected(play, openings=play.openings[:-1]).reason == "missing-lane"
    assert rejected(play, openings=play.openings[::-1]).reason in ("missing-lane",) or \
        play.openings[::-1] == play.openings
    short = dataclasses.replace(play.openings[0], leaves=play.openings[0].leaves[:-1])
    assert rejected(play, openings=[short] + play.openings[1:]).reason == "bad-length"
    assert rejected(play, roots=play.roots[:-1]).reason == "bad-commitment"


@pytest.mark.parametrize("key", GPUS)
def test_honest_false_failures_within_budget(key):
    """Compute phase 5e-5 plus walk 5e-5: an honest card fails fewer than 1e-4 of its challenges."""
    profile = PROFILES[key]
    params = size_challenge(bytes(32), profile, TimingConfig())
    plan = vm.plan_memory(params, profile)
    assert vm.honest_walk_failure_probability(plan, profile) <= 5.01e-5
    assert vm.honest_walk_failure_probability(plan, profile, eff=profile.walk_eff_high, overhead_s=0) < 1e-12


@pytest.mark.parametrize("key", GPUS)
def test_table_is_at_least_085_of_the_claim_and_fits_an_honest_card(key):
    profile = PROFILES[key]
    params = vm.size_for_memory(size_challenge(bytes(32), profile, TimingConfig()), profile)
    plan = vm.plan_memory(params, profile)
    assert plan.table_bytes >= 0.85 * vm.physical_bytes(profile)
    assert plan.table_bytes >= 0.85 * min(profile.memory_gib * vm.GIB, vm.physical_bytes(profile))
    # an honest card keeps 1 GiB beside the table and the working set (CUDA context, cuBLAS workspace)
    assert plan.table_bytes + vm.working_set_bytes(params) + vm.GIB <= vm.physical_bytes(profile)


@pytest.mark.parametrize(("claimed", "card", "bound"), [("h200", "h100-sxm", 1e-9), ("a100-80gb", "rtx-4090", 1e-9),
                                                        ("a100-80gb", "a100-40gb", 1e-3), ("h200", "h100-nvl", 1e-4),
                                                        ("h200", "a100-80gb", 1e-9), ("h200", "rtx-4090", 1e-9)])
def test_named_substitutions_are_bounded(claimed, card, bound):
    params = size_challenge(bytes(32), PROFILES[claimed], TimingConfig())
    sub = vm.substitute_bound(params, PROFILES[claimed], PROFILES[card])
    assert sub.pass_probability < bound, sub


def test_a_card_that_holds_the_table_is_bandwidth_bound():
    params = size_challenge(bytes(32), PROFILES["h100-sxm"], TimingConfig())
    plan = vm.plan_memory(params, PROFILES["h100-sxm"])
    cheat = vm.best_cheat(plan, PROFILES["h200"])
    assert cheat.limit == "memory bandwidth" and cheat.plain == 1
    assert math.isclose(cheat.seconds, plan.walk_bytes / 4.8e12)


def test_less_memory_costs_more_time():
    params = size_challenge(bytes(32), PROFILES["h200"], TimingConfig())
    plan = vm.plan_memory(params, PROFILES["h200"])
    card = PROFILES["h200"]
    times = [vm.best_cheat(plan, card, memory_bytes=f * plan.table_bytes).seconds for f in (1.0, 0.9, 0.7, 0.5)]
    assert times == sorted(times) and times[-1] > 3 * times[0]


def test_slow_walk_is_not_a_pass(play):
    limits = vm.walk_thresholds(play.plan, PROFILES["h200"])
    f = vm.memory_finding(play.plan, PROFILES["h200"], None, limits.slow_s * 1.01)
    assert not f.passed and f.walk_class == "slower-than-claimed" and f.capacity == "not-shown"
    f = vm.memory_finding(play.plan, PROFILES["h200"], None, limits.deadline_s + 1)
    assert f.walk_class == "timeout"
    f = vm.memory_finding(play.plan, PROFILES["h200"], vm.MemoryRejected("wrong-state", "x"), limits.expected_s)
    assert not f.passed and f.capacity == "failed" and f.to_json()["failure"] == "wrong-state"


def test_bandwidth_class_names_the_card():
    assert vm.best_bandwidth_match(0.8 * 4.8e12).bandwidth_gbs == 4800
    assert vm.best_bandwidth_match(0.8 * 300e9).bandwidth_gbs in (300, 320)  # an L4 or a T4, not an A100


def test_attack_suite_reduced(monkeypatch):
    """bench/memory_attacks.py at 200 challenges per strategy: every strategy within its stated bound, no
    honest false failure, and the named substitutions caught every time."""
    from tests.support.server import ROOT

    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import memory_attacks

    rows = {r.strategy.name: r for r in memory_attacks.suite(200, seed=7)}
    assert all(r.within_bound for r in rows.values()), [r for r in rows.values() if not r.within_bound]
    assert rows["honest H200"].passed == 0 and rows["honest A100 80GB"].passed == 0  # false failures
    for name in ("H100 SXM as H200", "A100 40GB as A100 80GB", "RTX 4090 as A100 80GB", "INT4 A100 as H100 SXM",
                 "partial table in host memory (10%)", "compressed table", "lanes skipped (20%)"):
        assert rows[name].passed == 0, name


def test_verified_class_needs_all_three_findings(play):
    h200, h100 = PROFILES["h200"], PROFILES["h100-sxm"]
    limits = vm.walk_thresholds(play.plan, h200)
    good = vm.memory_finding(play.plan, h200, None, limits.expected_s)
    slow = vm.memory_finding(play.plan, h200, None, limits.slow_s * 2)
    assert vm.verified_class_v2(h200, h200, good) == h200
    assert vm.verified_class_v2(h200, h200, slow) is None  # the table was not shown at memory speed
    assert vm.verified_class_v2(h200, h100, good) is None  # compute proved less than claimed
    assert vm.verified_class_v2(h200, None, good) is None


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_any_changed_byte_of_an_opening_is_rejected(play, data):
    """Flip one bit anywhere in one opened lane (state, walk path, a leaf, a leaf's path): rejected."""
    i = data.draw(st.integers(0, len(play.openings) - 1))
    o = play.openings[i]
    part = data.draw(st.sampled_from(["state", "path", "leaves", "leaf_paths"]))
    bit = data.draw(st.integers(0, 7))
    if part == "state":
        pos = data.draw(st.integers(0, 15))
        changed = dataclasses.replace(o, state=_flip(o.state, pos, bit))
    elif part == "path":
        j, pos = data.draw(st.integers(0, len(o.path) - 1)), data.draw(st.integers(0, 31))
        changed = dataclasses.replace(o, path=o.path[:j] + (_flip(o.path[j], pos, bit),) + o.path[j + 1:])
    elif part == "leaves":
        j, pos = data.draw(st.integers(0, len(o.leaves) - 1)), data.draw(st.integers(0, 1023))
        changed = dataclasses.replace(o, leaves=o.leaves[:j] + (_flip(o.leaves[j], pos, bit),) + o.leaves[j + 1:])
    else:
        j = data.draw(st.integers(0, len(o.leaf_paths) - 1))
        k, pos = data.draw(st.integers(0, len(o.leaf_paths[j]) - 1)), data.draw(st.integers(0, 31))
        path = o.leaf_paths[j][:k] + (_flip(o.leaf_paths[j][k], pos, bit),) + o.leaf_paths[j][k + 1:]
        changed = dataclasses.replace(o, leaf_paths=o.leaf_paths[:j] + (path,) + o.leaf_paths[j + 1:])
    openings = [changed if (n == i or play.drawn[n] == o.lane) else x for n, x in enumerate(play.openings)]
    assert rejected(play, openings=openings).reason in ("bad-lane-path", "bad-leaf-path", "wrong-state")


def _flip(raw: bytes, pos: int, bit: int) -> bytes:
    out = bytearray(raw)
    out[pos] ^= 1 << bit
    return bytes(out)


def test_walk_time_must_be_a_number(play):
    from gpuproof.kernels.errors import InvalidParameter

    for bad in (float("nan"), float("inf"), "1.0", True):
        with pytest.raises(InvalidParameter):
            vm.memory_finding(play.plan, PROFILES["h200"], None, bad)  # type: ignore[arg-type]
