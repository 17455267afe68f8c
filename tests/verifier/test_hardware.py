"""gpuproof.verifier.hardware: the per-device rule of settlement, with plain records and no HTTP (issue 16)."""

from __future__ import annotations

import pytest
from gpuproof.kernels.errors import InvalidParameter
from gpuproof.verifier import hardware
from gpuproof.verifier.hardware import DeviceEvidence, HardwarePolicy, at_or_above, judge_devices, verified_class
from gpuproof.verifier.profiles import UNPROFILED, load_profiles
from gpuproof.verifier.trust import VerdictRecord

P = load_profiles()


def rec(cid: str, timing: str = "consistent", correctness: str = "pass", claimed: str = "h100-sxm",
        best: str = "h100-sxm", detail: str = "") -> VerdictRecord:
    return VerdictRecord(evidence_id=cid * 8, at=1.0, correctness=correctness, timing=timing, best_match=best,
                         detail=detail, claimed_profile=claimed)


def test_classes_order_by_rate_memory_and_bandwidth():
    assert at_or_above(P["h200"], P["h100-sxm"])  # same rate, more memory and bandwidth
    assert not at_or_above(P["h100-sxm"], P["h200"])  # less memory: never at or above an H200
    assert not at_or_above(P["a100-40gb"], P["a100-80gb"]) and at_or_above(P["a100-80gb"], P["a100-40gb"])
    assert not at_or_above(P["cpu-reference"], P["h100-sxm"])
    assert not at_or_above(UNPROFILED, P["cpu-reference"]) and not at_or_above(P["h200"], UNPROFILED)


def test_what_a_pass_proves():
    assert verified_class(rec("a"), P) == P["h100-sxm"]
    # faster than claimed proves the claim, never the faster card: its timing says nothing of its memory
    assert verified_class(rec("a", timing="faster-than-claimed", claimed="a100-80gb", best="h200"), P) == P["a100-80gb"]
    assert verified_class(rec("a", timing="unprofiled", claimed="unprofiled", best="h200"), P) is None
    assert verified_class(rec("a", timing="slower-than-claimed"), P) is None
    assert verified_class(rec("a", correctness="fail"), P) is None


def test_a_cpu_claim_answered_at_an_h200s_rate_proves_no_gpu_class():
    """Review of 2026-11-30: an H100 owner claims cpu-reference (no memory phase), answers at a rate inside
    the H200 band, and the pass proved h200 (faster than claimed: the matched class), so an H200-paid job
    was released without the walk an H200 claim plays. Now it proves cpu-reference and the job holds."""
    cheat = rec("a", timing="faster-than-claimed", claimed="cpu-reference", best="h200")
    assert verified_class(cheat, P) == P["cpu-reference"]
    findings = judge_devices([DeviceEvidence(0, "cpu-reference", (cheat,))], "h200", P)
    assert findings.proven == () and "its passes prove only cpu-reference" in findings.hold[0]


def test_every_named_device_needs_its_own_passes():
    findings = judge_devices([DeviceEvidence(0, "h100-sxm", (rec("a"), rec("b"))), DeviceEvidence(1, "h100-sxm", ())],
                             "h100-sxm", P)
    assert findings.refund == () and findings.proven == ("device 0: 2 passes at h100-sxm or above",)
    assert findings.hold == ("device 1 has 0 of the 1 passes at h100-sxm or above that release needs since the "
                             "job began",)


def test_passes_below_the_paid_class_hold_and_say_what_they_prove():
    findings = judge_devices([DeviceEvidence(0, "h100-sxm", (rec("a"),))], "h200", P)
    assert findings.hold and "its passes prove only h100-sxm" in findings.hold[0]


def test_a_miss_holds_and_a_slower_card_refunds():
    missed = judge_devices([DeviceEvidence(0, "h100-sxm", (rec("a"), rec("b", timing="timeout",
                                                                        correctness="unchecked")))], "h100-sxm", P)
    assert missed.refund == () and any("was missed" in r for r in missed.hold)
    slower = judge_devices([DeviceEvidence(0, "h100-sxm", (rec("a", timing="slower-than-claimed", best="a100-80gb"),))],
                           "h100-sxm", P)
    assert slower.refund and "slower than any honest h100-sxm" in slower.refund[0] and "a100-80gb" in slower.refund[0]


def test_the_policy_number_of_passes_and_bad_input():
    two = HardwarePolicy(min_passes_per_device=2)
    assert judge_devices([DeviceEvidence(0, "h100-sxm", (rec("a"),))], "h100-sxm", P, two).hold
    assert not judge_devices([DeviceEvidence(0, "h100-sxm", (rec("a"), rec("b")))], "h100-sxm", P, two).hold
    for paid in ("unprofiled", "h900"):
        with pytest.raises(InvalidParameter, match="paid_class"):
            judge_devices([DeviceEvidence(0, "h100-sxm", ())], paid, P)
    with pytest.raises(InvalidParameter, match="devices"):
        judge_devices([], "h100-sxm", P)
    with pytest.raises(InvalidParameter, match="min_passes_per_device"):
        HardwarePolicy(min_passes_per_device=0)


def test_a_job_whose_paid_class_is_unknown_holds():
    for paid, named in (("", "none"), ("gone-card", "gone-card")):
        found = hardware.findings([DeviceEvidence(0, "h100-sxm", (rec("a"),))], paid, P)
        assert found.refund == () and found.proven == ()
        assert found.hold == (f"the job names no known paid class ({named}): no hardware can be proven for it",)
    assert hardware.findings([DeviceEvidence(0, "h100-sxm", (rec("a"),))], "h100-sxm", P).proven == \
        ("device 0: 1 passes at h100-sxm or above",)


def test_the_class_a_device_verified_is_its_most_frequent_recent_match():
    window = hardware.VERIFIED_WINDOW_S
    now = 10 * window
    passes = [(0, now - 10, "h100-sxm"), (0, now - 20, "h200"), (0, now - 30, "h200"), (1, now - 5, "a100-80gb"),
              (1, now - window, "h200"), (1, now - window - 1, "h200"), (2, now - 1, "")]
    assert hardware.verified_classes(passes, now) == {0: "h200", 1: "a100-80gb"}  # the window's edge is outside it
    assert hardware.verified_classes(passes, now, window_s=15) == {0: "h100-sxm", 1: "a100-80gb"}


def test_a_verified_class_holds_until_its_lead_has_left_the_window():
    """The instant a device's verified class could change with no new pass: when as many of its passes as
    it leads the runner-up by have aged out (checked against verified_classes at every instant around it)."""
    window = 100.0
    passes = [(0, 10.0, "h200"), (0, 20.0, "h200"), (0, 30.0, "h200"), (0, 25.0, "h100-sxm"), (0, 35.0, "h100-sxm"),
              (1, 50.0, "a100-80gb"), (1, 55.0, "h200"),  # a tie: the latest pass wins
              (2, 40.0, "h100-sxm")]
    found = hardware.verified_classes_until(passes, 60.0, window)
    assert found == {0: ("h200", 10.0 + window), 1: ("h200", 55.0 + window), 2: ("h100-sxm", 40.0 + window)}
    for device, (cls, until) in found.items():  # the class is the same at every instant before `until`
        for now in (60.0, until - 1e-6):
            assert hardware.verified_classes(passes, now, window)[device] == cls
        assert hardware.verified_classes(passes, until + 1e-6, window).get(device) != cls


def test_a_full_tie_goes_to_the_same_class_whatever_the_rows_order():
    """Equal counts and equal latest passes: the stored class (at a pass) and the shown one (at a read) come
    from rows read in no set order, and must agree."""
    passes = [(0, 10.0, "h100-sxm"), (0, 10.0, "a100-80gb")]
    assert hardware.verified_classes(passes, 20.0, 100.0) == hardware.verified_classes(passes[::-1], 20.0, 100.0)
