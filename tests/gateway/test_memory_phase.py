"""Spec v2's memory phase over HTTP (issue 17 part 3), for what HTTP adds: the walk nonce in the commitment's
answer, POST /walk timed on the gateway's clock and answered with the lanes, retries, openings refused before
the walk, and the verdicts of a late walk, a tampered lane and a cheater keeping half the table."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient
from gpuproof.gateway.app import create_app
from gpuproof.gateway.settings import Settings
from gpuproof.kernels.memory import MemoryPlan
from gpuproof.verifier import memory as vm
from gpuproof.verifier.profiles import load_profiles_with

from tests.gateway.test_paid_hardware import Provider
from tests.support import honest
from tests.support.calibrate import scaled
from tests.support.memory_card import profile_toml


class _Gw:
    pass


@pytest.fixture
def card(database_url, tmp_path):
    """A gateway whose profiles have the test card (its walk's slow edge 0.3 s: the late walks below must
    miss it; honest walks here take milliseconds on a quiet machine, scaled(1) on a loaded one at most)."""
    path = tmp_path / "profiles.toml"
    path.write_text(profile_toml(max(0.3, scaled(0.3))))
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url, verify_test_shape="16,256,64,3",
                        challenge_interval_s=3600, provider_rate_per_s=1000, ip_rate_per_s=10000,
                        maintenance_interval_s=0, profiles_file=path)
    app = create_app(settings)
    with TestClient(app) as client:
        gw = _Gw()
        gw.client, gw.app = client, app  # type: ignore[attr-defined]
        gw.profile = load_profiles_with(path)["test-card"]  # type: ignore[attr-defined]
        yield gw


def _commit(box: Provider):  # noqa: ANN202
    c = box.challenge(0)
    assert c["spec"] == "gpuproof/2" and c["memory"]["spec"] == "gpuproof/2-memory", c
    params, roots, request = box.commit_full(c)
    assert len(bytes.fromhex(request["walk_nonce"])) == 16
    return c, params, roots, request, honest.memory_prover(c, params, roots)


def test_the_walk_step_over_http_and_its_retries(card):
    box = Provider(card, ["test card"])
    c, params, roots, request, prover = _commit(box)
    cid = c["challenge_id"]
    early = box.post(f"/v1/challenges/{cid}/openings", {"openings": honest.openings(params, roots, request["pairs"])})
    assert early.status_code == 409 and "walk" in early.json()["detail"]
    wk, walk_root = honest.walk(prover, params, roots, request["walk_nonce"])
    first = box.post(f"/v1/challenges/{cid}/walk", {"walk_root": walk_root.hex()})
    assert first.status_code == 200 and len(first.json()["lanes"]) == c["memory"]["opened"]
    assert box.post(f"/v1/challenges/{cid}/walk", {"walk_root": walk_root.hex()}).json() == first.json()
    other = box.post(f"/v1/challenges/{cid}/walk", {"walk_root": "00" * 32})
    assert other.status_code == 409
    resumed = box.post(f"/v1/providers/{box.id}/challenges", {"device": 0}).json()
    assert resumed["lane_request"] == first.json() and resumed["opening_request"]["walk_nonce"] == request["walk_nonce"]
    verdict = box.post(f"/v1/challenges/{cid}/openings", {"openings": honest.openings(params, roots, request["pairs"]),
                                                           "lanes": honest.lanes(prover, wk, first.json()["lanes"])})
    assert verdict.status_code == 200 and verdict.json()["outcome"] == "pass", verdict.json()["reasons"]
    assert verdict.json()["memory"]["passed"]


def test_a_v1_challenge_has_no_walk(card):
    box = Provider(card, ["cpu-reference"])
    c = box.challenge(0)
    assert "memory" not in c
    _, _, request = box.commit_full(c)
    assert "walk_nonce" not in request
    assert box.post(f"/v1/challenges/{c['challenge_id']}/walk", {"walk_root": "00" * 32}).status_code == 409


def test_late_walk_commitment_fails_the_verdict_over_http(card):
    box = Provider(card, ["test card"])
    c, params, roots, request, prover = _commit(box)
    plan = MemoryPlan(params, **{k: v for k, v in c["memory"].items() if k != "spec"})
    limits = vm.walk_thresholds(plan, card.profile)
    wk, walk_root = honest.walk(prover, params, roots, request["walk_nonce"])
    time.sleep(limits.slow_s + vm.MemoryConfig().max_rtt_allowance_s + 0.2)  # the walk root comes too late
    lanes = box.post(f"/v1/challenges/{c['challenge_id']}/walk", {"walk_root": walk_root.hex()}).json()["lanes"]
    verdict = box.post(f"/v1/challenges/{c['challenge_id']}/openings",
                       {"openings": honest.openings(params, roots, request["pairs"]),
                        "lanes": honest.lanes(prover, wk, lanes)}).json()
    assert verdict["outcome"] == "fail" and verdict["correctness"] == "pass"
    assert verdict["memory"]["walk_class"] in ("slower-than-claimed", "timeout") and not verdict["memory"]["passed"]
    assert any(r.startswith("memory phase FAILED") for r in verdict["reasons"])


def test_lanes_that_do_not_match_the_committed_roots_fail_correctness_over_http(card):
    box = Provider(card, ["test card"])
    c, params, roots, request, prover = _commit(box)
    wk, walk_root = honest.walk(prover, params, roots, request["walk_nonce"])
    lanes = box.post(f"/v1/challenges/{c['challenge_id']}/walk", {"walk_root": walk_root.hex()}).json()["lanes"]
    opened = honest.lanes(prover, wk, lanes)
    leaf = opened[0]["leaves"][5]
    opened[0]["leaves"][5] = ("0" if leaf[0] != "0" else "1") + leaf[1:]
    verdict = box.post(f"/v1/challenges/{c['challenge_id']}/openings",
                       {"openings": honest.openings(params, roots, request["pairs"]), "lanes": opened}).json()
    assert verdict["outcome"] == "fail" and verdict["correctness"] == "fail"
    assert verdict["failure"]["reason"] == "memory:bad-leaf-path" and verdict["memory"]["capacity"] == "failed"


def test_a_cheater_keeping_half_the_table_fails_over_http(card):
    """It keeps half the table and walks the other half over zeros (recomputing would cost it the walk's
    time): its lanes do not check."""
    box = Provider(card, ["test card"])
    c, params, roots, request, prover = _commit(box)
    prover.table[prover.plan.table_leaves // 2:] = 0
    wk, walk_root = honest.walk(prover, params, roots, request["walk_nonce"])
    lanes = box.post(f"/v1/challenges/{c['challenge_id']}/walk", {"walk_root": walk_root.hex()}).json()["lanes"]
    verdict = box.post(f"/v1/challenges/{c['challenge_id']}/openings",
                       {"openings": honest.openings(params, roots, request["pairs"]),
                        "lanes": honest.lanes(prover, wk, lanes)}).json()
    assert verdict["outcome"] == "fail" and verdict["failure"]["reason"].startswith("memory:")
    assert not verdict["memory"]["passed"]
