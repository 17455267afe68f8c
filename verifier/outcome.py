"""What a verdict says, as enums, and the one rule of what counts as a pass (docs/protocol.md, "Verdict").

The enums are `StrEnum`s: each member *is* its wire string ("pass", "faster-than-claimed", ...), so stored
JSON, database columns and HTTP bodies keep their bytes, and a plain string from the wire compares equal.
"""

from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    """A verdict's decision."""

    PASS = "pass"
    FAIL = "fail"


class Correctness(StrEnum):
    """Whether the opened rows were right: "unchecked" when no openings came (a timeout, a missed start)."""

    PASS = "pass"
    FAIL = "fail"
    UNCHECKED = "unchecked"


class Timing(StrEnum):
    """The timing class of a challenge (verifier.timing.classify), and `TRAINING`, which is none: it marks a
    training-work check (a replayed segment, a run's timing) among a provider's verdict records."""

    CONSISTENT = "consistent"
    SLOWER = "slower-than-claimed"
    FASTER = "faster-than-claimed"
    TIMEOUT = "timeout"
    UNPROFILED = "unprofiled"
    TRAINING = "training"


TIMING_CLASSES = (Timing.CONSISTENT, Timing.SLOWER, Timing.FASTER, Timing.TIMEOUT, Timing.UNPROFILED)
"""The classes a challenge's timing can take."""

PASSING_TIMING = frozenset({Timing.CONSISTENT, Timing.FASTER, Timing.UNPROFILED, Timing.TRAINING})
"""Timing that does not fail a verdict: faster than claimed passes (the card is better than claimed, the model
is misreported); an unprofiled device claims no class timing could contradict; a training check has no timing
class of its own (its correctness says it all)."""


def passed(correctness: str, timing: str, memory: str | None = None) -> bool:
    """The pass rule, the only place it is written: every opened row right, timing that does not fail, and
    for a challenge with a memory phase (spec v2 on a profiled card: `memory` "pass", "fail" or "missing",
    verifier.memory.memory_status) a memory finding that did not fail."""
    return correctness == Correctness.PASS and timing in PASSING_TIMING and memory != "fail"
