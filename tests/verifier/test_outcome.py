"""The verdict enums and the one pass rule (verifier/outcome.py), and the one id validator (verifier/ids.py)."""

from __future__ import annotations

import json

import pytest
from gpuproof.kernels.errors import InvalidParameter
from gpuproof.verifier.ids import check_id, is_hex
from gpuproof.verifier.outcome import TIMING_CLASSES, Correctness, Outcome, Timing, passed


def test_members_are_their_wire_strings():
    """Stored JSON, database columns and HTTP bodies keep their bytes: each member is its string."""
    assert [str(t) for t in TIMING_CLASSES] == ["consistent", "slower-than-claimed", "faster-than-claimed", "timeout",
                                                 "unprofiled"]
    assert json.dumps({"o": Outcome.PASS, "c": Correctness.UNCHECKED, "t": Timing.FASTER}) == \
        '{"o": "pass", "c": "unchecked", "t": "faster-than-claimed"}'
    assert Timing("faster-than-claimed") is Timing.FASTER and Timing.TRAINING == "training"


@pytest.mark.parametrize("correctness, timing, want", [
    ("pass", "consistent", True),
    ("pass", "faster-than-claimed", True),  # a better card than claimed: the model is misreported, the work done
    ("pass", "unprofiled", True),
    ("pass", "training", True),  # a training check has no timing class: its correctness decides
    ("pass", "slower-than-claimed", False),
    ("pass", "timeout", False),
    ("fail", "consistent", False),
    ("unchecked", "timeout", False),
])
def test_the_pass_rule(correctness, timing, want):
    assert passed(correctness, timing) is want
    assert passed(Correctness(correctness), Timing(timing)) is want


def test_one_id_validator():
    assert is_hex("0f" * 16, 16) and not is_hex("0F" * 16, 16) and not is_hex("0f" * 16 + "\n", 16)
    assert not is_hex(None, 16) and is_hex("ab" * 32, 32)
    assert check_id("a" * 32, "challenge_id") == "a" * 32
    with pytest.raises(InvalidParameter, match="job_id.*32 lowercase hex"):
        check_id("g" * 32, "job_id")
