"""Transcripts: a renter's offline re-check reproduces the verdict, or names the difference."""

from __future__ import annotations

import copy
import json

import pytest
from gpuproof.simulators.protocol import Honest, SkipRows
from gpuproof.verifier import transcript
from gpuproof.verifier.protocol import Verifier

V = Verifier()


def judged(strategy=None, spec=None):
    challenge = V.issue("cpu-reference", now=5000.0, shape=(16, 256, 64, 3), spec=spec)
    held = (strategy or Honest()).commit(challenge.params)
    commitment = V.commit(challenge, held.roots, received_at=5000.25, rtt_s=0.05)
    request = V.request_openings(challenge, commitment)
    openings = (strategy or Honest()).open(challenge.params, held, request.pairs, request.x)
    verdict = V.judge(challenge, commitment, request, openings)
    return json.loads(json.dumps(transcript.build(challenge, commitment, request, openings, verdict)))


@pytest.mark.parametrize("strategy", [None, SkipRows(1.0)], ids=["honest", "cheater"])
def test_recheck_reproduces_the_recorded_verdict(strategy):
    doc = judged(strategy)
    verdict, diffs = transcript.recheck(doc)
    assert diffs == []
    assert verdict.outcome == doc["verdict"]["outcome"]


def test_tampered_row_changes_the_verdict_and_the_difference_is_named():
    doc = judged()
    doc["openings"][0]["values"][3] += 1
    verdict, diffs = transcript.recheck(doc)
    assert verdict.outcome == "fail"
    assert any(d.startswith("verdict.outcome: recorded 'pass', recomputed 'fail'") for d in diffs)


def test_edited_verdict_is_caught():
    doc = judged(SkipRows(1.0))
    doc["verdict"]["outcome"] = "pass"
    _, diffs = transcript.recheck(doc)
    assert any("verdict.outcome" in d for d in diffs)


def test_a_transcript_recorded_under_an_older_cheat_model_still_stands():
    """The bound, the cheat model, the reasons and the best match explain a verdict against the profile table of
    the day; an old transcript whose decision is re-judged the same still stands (v1 transcripts keep
    re-checking as the table and the cheat model improve)."""
    doc = judged()
    doc["verdict"].update(cheat_pass_probability=1.1e-4, cheat_model={"substitute": "a100-80gb"},
                          reasons=["older wording"], best_match="h100-sxm")
    verdict, diffs = transcript.recheck(doc)
    assert diffs == [] and verdict.outcome == "pass"
    for key, value in [("correctness", "fail"), ("timing", "slower-than-claimed"), ("measured_s", 9.0)]:
        edited = judged()
        edited["verdict"][key] = value
        assert any(d.startswith(f"verdict.{key}:") for d in transcript.recheck(edited)[1]), key


def test_edited_timing_is_caught():
    doc = judged()
    doc["commitment"]["measured_s"] = 0.01
    _, diffs = transcript.recheck(doc)
    assert any(d.startswith("commitment.measured_s") for d in diffs)


@pytest.mark.parametrize("path, value, fragment", [
    (("version",), "gpuproof.transcript/0", "version"),
    (("challenge", "seed"), "zz", "challenge.seed"),
    (("challenge", "m"), "16", "challenge.m"),
    (("challenge", "n"), 300, "--n"),
    (("commitment", "roots"), ["00"], "commitment.roots[0]"),
    (("commitment", "roots"), [5], "commitment.roots[0]"),
    (("request", "x"), "00", "request.x"),
    (("request", "pairs"), [[1]], "request.pairs[0]"),
    (("challenge", "issued_at"), float("inf"), "issued_at"),
])
def test_malformed_transcripts_name_the_field(path, value, fragment):
    doc = copy.deepcopy(judged())
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(transcript.TranscriptError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        transcript.recheck(doc)


@pytest.mark.parametrize("spec", ["gpuproof/1", "gpuproof/2"])
def test_a_transcript_names_its_spec_and_rechecks_under_it(spec):
    doc = judged(spec=spec)
    assert doc["spec"] == spec
    verdict, diffs = transcript.recheck(doc)
    assert diffs == [] and verdict.outcome == "pass"
    other = copy.deepcopy(doc)
    other["spec"] = "gpuproof/2" if spec == "gpuproof/1" else "gpuproof/1"
    verdict, diffs = transcript.recheck(other)  # the same rows under the other spec are wrong values
    assert verdict.failure is not None and verdict.failure.reason == "wrong-value"
    assert any(d.startswith("verdict.outcome") for d in diffs)


def test_a_transcript_without_a_spec_is_v1_and_an_unknown_spec_is_refused():
    doc = judged(spec="gpuproof/1")
    del doc["spec"]
    assert transcript.recheck(doc)[1] == []
    doc["spec"] = "gpuproof/9"
    with pytest.raises(transcript.TranscriptError, match="spec: expected one of gpuproof/1, gpuproof/2"):
        transcript.parse(doc)
