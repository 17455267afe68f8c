"""Which hardware a job was proven to run on (docs/protocol.md, "Settlement": "Paid for proven hardware").

A job names its devices and the class it pays for (a profile). Settlement may release only when every named
device has, within the job's window, at least `min_passes_per_device` passed challenges whose verified class
is at or above the paid class, and no failed or missed challenge. Provider-wide trust is not enough: an
identity that passes cheap challenges on one device says nothing about the others.

Pure: plain records in, reasons out; the gateway loads the rows and stores the decision.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from gpuproof.kernels.errors import InvalidParameter
from gpuproof.verifier.outcome import Correctness, Timing
from gpuproof.verifier.profiles import UNPROFILED_KEY, Profile
from gpuproof.verifier.trust import VerdictRecord


@dataclass(frozen=True)
class HardwarePolicy:
    """How much per-device evidence a release needs."""

    min_passes_per_device: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.min_passes_per_device, int) or not 1 <= self.min_passes_per_device <= 1000:
            raise InvalidParameter("min_passes_per_device", f"must be an integer in 1..1000, got "
                                   f"{self.min_passes_per_device!r}")


@dataclass(frozen=True)
class DeviceEvidence:
    """One device a job names: its position, the profile its claim maps to, and the hardware verdicts
    judged on it within the job's window (oldest first)."""

    position: int
    claimed_profile: str
    verdicts: tuple[VerdictRecord, ...]


@dataclass(frozen=True)
class HardwareFindings:
    """What the per-device evidence says: refund reasons (the hardware is not what was paid for, or it
    cheated), hold reasons (not proven yet), and, when both are empty, what was proven."""

    refund: tuple[str, ...]
    hold: tuple[str, ...]
    proven: tuple[str, ...]


def at_or_above(verified: Profile, paid: Profile) -> bool:
    """Whether a card of class `verified` is at least what `paid` pays for: the same profile, or one at
    least as fast (datasheet dense int8) with at least as much memory and bandwidth. An unprofiled device
    is never at or above anything: it makes no claim timing could contradict, so it proves no class."""
    if not verified.is_profiled or not paid.is_profiled:
        return False
    if verified.key == paid.key:
        return True
    return (verified.int8_tops >= paid.int8_tops and verified.memory_gib >= paid.memory_gib
            and verified.bandwidth_gbs >= paid.bandwidth_gbs)


def verified_class(record: VerdictRecord, profiles: Mapping[str, Profile]) -> Profile | None:
    """The class one passed hardware verdict proves: the claimed profile when the timing was consistent
    with it or faster, nothing otherwise (a failure, an unprofiled device, a training verdict). Never more
    than the claim: a faster card's timing says nothing of its memory, and a claim with no memory phase
    (a CPU profile) must not prove a GPU class by speed alone (a card claiming cpu-reference, answering at
    an H200's rate, skipped the walk that an H200 claim plays). A challenge with a memory phase (spec v2 on
    a profiled card) proves its class only with a passed memory finding (verifier.memory.verified_class_v2)."""
    if not record.passed or record.training or not record.proves_memory:
        return None
    claimed = profiles.get(record.claimed_profile)
    if claimed is None or not claimed.is_profiled:
        return None
    if record.memory is not None:
        compute = profiles.get(record.claimed_profile if record.timing == Timing.CONSISTENT else record.best_match)
        return claimed if compute is not None and at_or_above(compute, claimed) else None
    return claimed if record.timing in (Timing.CONSISTENT, Timing.FASTER) else None


def judge_devices(devices: Sequence[DeviceEvidence], paid_class: str, profiles: Mapping[str, Profile],
                  policy: HardwarePolicy | None = None) -> HardwareFindings:
    """The hardware part of a job's settlement, device by device.

    refund  a named device was slower than the class it claimed (its hardware is not what was claimed);
            correctness failures and withheld openings, on any device, are settle()'s to refund;
    hold    a named device has fewer than `min_passes_per_device` passes at or above the paid class in
            the job's window, or missed a challenge (a timeout), or passed only as unprofiled or below
            the paid class;
    Every reason names the device; `proven` lists, per device, the passes that count.
    """
    policy = policy or HardwarePolicy()
    if paid_class == UNPROFILED_KEY or paid_class not in profiles:
        raise InvalidParameter("paid_class", f"must be a known profile, got {paid_class!r}")
    if not devices:
        raise InvalidParameter("devices", "a job names at least one device")
    paid = profiles[paid_class]
    refund, hold, proven = [], [], []
    for d in devices:
        name = f"device {d.position}"
        counted = 0
        below: set[str] = set()
        for v in d.verdicts:
            if v.training:
                continue
            if v.correctness == Correctness.FAIL:
                continue  # settle() refunds every correctness failure of the provider during the job
            if v.timing == Timing.SLOWER:
                refund.append(f"{name}: challenge {v.evidence_id[:12]} was slower than any honest "
                              f"{d.claimed_profile} (its rate matches {v.best_match or 'no profile'})")
            elif v.memory == "fail":
                refund.append(f"{name}: challenge {v.evidence_id[:12]} failed the memory phase: its walk was slower "
                              f"than any honest {d.claimed_profile}'s memory allows (it does not hold the claimed "
                              f"memory)")
            elif v.timing == Timing.TIMEOUT:
                hold.append(f"{name}: challenge {v.evidence_id[:12]} was missed (no answer before its deadline)")
            else:
                cls = verified_class(v, profiles)
                if cls is not None and at_or_above(cls, paid):
                    counted += 1
                elif v.memory == "missing":
                    below.add("a v2 pass without a memory finding")
                else:
                    below.add(cls.key if cls is not None else "unprofiled")
        if counted < policy.min_passes_per_device:
            why = f"{name} has {counted} of the {policy.min_passes_per_device} passes at {paid.key} or above " \
                  f"that release needs since the job began"
            if below:
                why += f" (its passes prove only {', '.join(sorted(below))})"
            hold.append(why)
        else:
            proven.append(f"{name}: {counted} passes at {paid.key} or above")
    return HardwareFindings(tuple(refund), tuple(hold), tuple(proven))


def findings(devices: Sequence[DeviceEvidence], paid_class: str, profiles: Mapping[str, Profile],
             policy: HardwarePolicy | None = None) -> HardwareFindings:
    """The hardware part of a job's settlement (`judge_devices`); a job whose paid class is no known profile
    (none recorded, or one since removed from the profiles file) can have no hardware proven: it holds."""
    if paid_class not in profiles:
        return HardwareFindings((), (f"the job names no known paid class ({paid_class or 'none'}): no hardware "
                                     "can be proven for it",), ())
    return judge_devices(devices, paid_class, profiles, policy)


VERIFIED_WINDOW_S = 28 * 86400  # passes older than this no longer verify a device's class


def verified_classes(passes: Iterable[tuple[int, float, str]], now: float,
                     window_s: float = VERIFIED_WINDOW_S) -> dict[int, str]:
    """Per device, the class its recent passes proved most often (the class shown as verified in listings):
    `passes` are (device, judged_at, class) with the class each pass proves (`verified_class`, "" for none);
    those judged `window_s` or longer before `now`, and those that proved no class, do not count. A tie goes
    to the class proved most recently."""
    return {d: cls for d, (cls, _) in verified_classes_until(passes, now, window_s).items()}


def verified_classes_until(passes: Iterable[tuple[int, float, str]], now: float,
                           window_s: float = VERIFIED_WINDOW_S) -> dict[int, tuple[str, float]]:
    """`verified_classes`, each with the instant until which it holds unless a new pass comes: the class
    keeps its place until as many of its passes as it leads the runner-up by (one, on a tie, which it wins
    by its latest pass) have left the window, so the gateway stores the class with that instant and
    works it out again only then or at the device's next pass (gateway/service.py store_verified)."""
    times: dict[int, dict[str, list[float]]] = {}
    for device, judged_at, match in passes:
        if match and judged_at > now - window_s:
            times.setdefault(device, {}).setdefault(match, []).append(judged_at)
    out: dict[int, tuple[str, float]] = {}
    for device, by_class in times.items():
        # most passes, then the latest pass, then the name: the same class whatever order the rows came in
        ranked = sorted(by_class.items(), key=lambda kv: (len(kv[1]), max(kv[1]), kv[0]), reverse=True)
        cls, at = ranked[0]
        lead = len(at) - (len(ranked[1][1]) if len(ranked) > 1 else 0)
        out[device] = (cls, sorted(at)[max(lead, 1) - 1] + window_s)
    return out
