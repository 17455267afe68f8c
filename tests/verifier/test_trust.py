"""Trust scores with decay and reasons, and settlement decisions."""

from __future__ import annotations

import pytest
from gpuproof.verifier.trust import (
    DAY,
    CheckpointVerdict,
    ScoringPolicy,
    SettlementPolicy,
    VerdictRecord,
    score,
    settle,
)

NOW = 1.8e9


def rec(i, age_days, correctness="pass", timing="consistent", best="h100-sxm"):
    return VerdictRecord(f"{i:032x}", NOW - age_days * DAY, correctness, timing, best_match=best,
                         claimed_profile="h100-sxm")


def passes(count, age_days=0.1):
    return [rec(i, age_days) for i in range(count)]


def test_new_provider_is_unproven_not_distrusted():
    s = score([], NOW)
    assert s.score == pytest.approx(0.5) and s.lower_bound < 0.1 and s.status == "unproven"
    assert s.evidence == 0 and "unproven" in s.reasons[0]


def test_passes_build_trust_and_a_tight_lower_bound():
    s = score(passes(60), NOW)
    assert s.score > 0.95 and s.lower_bound > 0.9 and s.status == "trusted"
    assert s.verified_class == "h100-sxm" and s.last_verified_at == pytest.approx(NOW - 0.1 * DAY)


def test_the_verified_class_is_the_claim_never_a_faster_match():
    """Review of 2026-11-30: an honest H100 SXM at ~1385 TOPS matched the H200's typical rate more nearly,
    and trust showed it verified as h200 (and the listing's model filter found it as one), while
    settlement proved h100-sxm. A pass proves its claim, never more (verifier.hardware.verified_class)."""
    faster = [rec(i, 0.1, timing="faster-than-claimed", best="h200") for i in range(10)]
    assert score(faster, NOW).verified_class == "h100-sxm"


def test_a_correctness_failure_weighs_far_more_than_a_timeout():
    base = passes(30)
    with_timeout = score(base + [rec(99, 0.1, timing="timeout")], NOW)
    with_cheat = score(base + [rec(99, 0.1, correctness="fail")], NOW)
    assert with_cheat.score < with_timeout.score - 0.2
    assert "failed the correctness check" in with_cheat.reasons[0]


def test_reasons_are_full_sentences_that_say_which_way_a_verdict_counts():  # was "...; weighs 1.00 for"
    s = score([rec(1, 0.0), rec(2, 0.0, correctness="fail")], NOW)
    against, favour = s.reasons
    assert against.endswith("failed the correctness check; it counts 20.00 against the provider")
    assert favour.endswith("passed, timing consistent with the claimed card; it counts 1.00 in the provider's favour")
    assert not any(r.rstrip().endswith((" for", " against")) for r in s.reasons)


def test_old_evidence_decays_with_the_half_life():
    fresh = score([rec(1, 0.0, correctness="fail")], NOW)
    old = score([rec(1, 28.0, correctness="fail")], NOW)  # four half-lives
    assert old.score > fresh.score
    assert old.effective_evidence == pytest.approx(20 / 16, rel=1e-6)


def test_reasons_name_the_verdicts_that_moved_the_score_most():
    s = score(passes(5) + [rec(42, 1.0, timing="slower-than-claimed")], NOW)
    assert "slower than the claimed card" in s.reasons[0] and "against" in s.reasons[0]
    assert len(s.reasons) == 3


def test_policy_is_validated():
    with pytest.raises(ValueError):
        ScoringPolicy(half_life_days=0)
    with pytest.raises(ValueError):
        SettlementPolicy(release_min_lower_bound=2)


def test_settlement_release_hold_refund():
    trusted = score(passes(60), NOW)
    assert settle(trusted, passes(3), NOW).decision == "release"
    assert settle(trusted, [], NOW, [CheckpointVerdict("cp1", None)]).decision == "hold"
    refund = settle(trusted, [rec(7, 0.2, correctness="fail")], NOW)
    assert refund.decision == "refund" and "correctness" in refund.reasons[0]
    assert settle(trusted, [], NOW, [CheckpointVerdict("cp2", False, "root mismatch")]).decision == "refund"
    new = score([], NOW)
    held = settle(new, [], NOW)
    assert held.decision == "hold" and any("never passed" in r for r in held.reasons)
    stale = score(passes(60, age_days=3), NOW)
    assert settle(stale, [], NOW, policy=SettlementPolicy(release_min_lower_bound=0.3)).decision == "hold"
    busy = settle(trusted, passes(3), NOW, in_progress=[("ab" * 16, NOW + 12.4)])
    assert busy.decision == "hold" and busy.reasons == ("challenge abababababab is in progress (its deadline is in "
                                                       "12 s)",)


def test_lower_bound_is_the_beta_posteriors_5_percent_quantile():
    from scipy.stats import beta

    records = passes(7) + [rec(9, 2.0, timing="timeout")]
    s = score(records, NOW)
    alpha = 1 + sum(0.5 ** ((NOW - r.at) / (7 * DAY)) for r in records if r.passed)
    b = 1 + 0.5 ** (2.0 / 7)
    assert s.lower_bound == pytest.approx(beta.ppf(0.05, alpha, b), rel=1e-9)
    assert s.score == pytest.approx(alpha / (alpha + b))


def test_passes_of_one_round_weigh_one_pass_however_many_devices_answered_it():
    """Reproduction (farming): one identity's many devices passing one round looked like many independent
    passes. A round (every device challenged at one instant) is one piece of evidence; failures count each."""
    from gpuproof.verifier.trust import VerdictRecord, score

    def passes(rounds: int, devices: int) -> list[VerdictRecord]:
        return [VerdictRecord(evidence_id=f"{r:04d}{d:04d}" * 4, at=1000.0 + r, correctness="pass",
                              timing="consistent", round_at=1000.0 + r)
                for r in range(rounds) for d in range(devices)]

    wide = score(passes(1, 64), now=1100.0)
    assert wide.effective_evidence == pytest.approx(1.0, abs=1e-3) and wide.status == "unproven", wide
    spread = score(passes(5, 1), now=1100.0)
    assert spread.lower_bound >= 0.6 and spread.status == "trusted", spread
    assert score(passes(5, 64), now=1100.0).lower_bound == pytest.approx(spread.lower_bound)
    failing = [VerdictRecord(evidence_id=f"{d:032d}", at=1000.0, correctness="fail", timing="consistent",
                             round_at=1000.0) for d in range(3)]
    assert score(failing, now=1000.0).effective_evidence == pytest.approx(60.0)
