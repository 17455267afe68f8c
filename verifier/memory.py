"""The memory phase of spec gpuproof/2: sizing, the lane checks, the walk's timing and the memory verdict,
with the cheating bounds they state (docs/protocol.md "Spec v2: memory phase", docs/threat-model.md
"Memory").

Pure: plans, bytes and a measured time in, a `MemoryFinding` out. The flow a gateway wires up:

    plan = plan_memory(params, profile)                      # at issue, kept with the challenge
    # roots committed (timed as today) -> send nonce = secrets.token_bytes(16), note sent_at
    # walk root committed -> walk_s = received_at - sent_at - rtt_allowance
    drawn = draw_lanes(plan)                                 # after the walk root is stored
    finding = judge_memory(plan, profile, roots, nonce, walk_root, drawn, openings, walk_s)

verifier.protocol.Verifier does exactly this (request_openings with the nonce, commit_walk, draw_lanes, judge),
and the gateway (gateway/routers/challenges.py) stores each step; `needs_memory_phase` says which challenges
have the phase and `memory_status` what a stored verdict says of it for trust and settlement.
"""

from __future__ import annotations

import hmac
import math
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np
from gpuproof.kernels import memory, merkle
from gpuproof.kernels.errors import GpuproofError, InvalidParameter, ProofError
from gpuproof.kernels.memory import LaneOpening, MemoryPlan
from gpuproof.kernels.spec import CHUNK_BYTES, ChallengeParams
from gpuproof.verifier.outcome import Timing
from gpuproof.verifier.profiles import Profile, load_profiles

GIB = 2**30
SHA_OPS_MEASURED = 1290.0
"""Integer instructions per SHA-256 compression on a GPU, from the H200's measured leaf hashing (780 GB/s
= 7.6e8 leaves/s of 17 compressions, on 132 SMs x 64 int32 lanes x 1.98 GHz; docs/performance.md)."""
SHA_OPS_CHEAT = 1000.0
"""What the cheat model grants a cheater: compressions 30% cheaper than we have ever measured."""

# Datasheet figures the cheat model needs beyond the profiles: int32 lanes per clock (64 per SM on
# Turing through Hopper) x SMs x boost clock, as tera-ops/s; and host link GB/s per direction (PCIe Gen3
# x16 16, Gen4 32, Gen5 64). A card not listed gets the largest of each (the cheater's best case).
INT32_TOPS = {"h200": 16.7, "h200-nvl": 15.1, "h100-sxm": 16.7, "h100-nvl": 15.1, "h100-pcie": 12.8,
              "a100-80gb": 9.7, "a100-40gb": 9.7, "l40s": 22.9, "l4": 7.6, "a10": 7.8, "rtx-6000-ada": 22.8,
              "rtx-a6000": 9.7, "rtx-4090": 20.6, "rtx-3090": 8.9, "t4": 4.1}
HOST_LINK_GBS = {"h200": 64, "h200-nvl": 64, "h100-sxm": 64, "h100-nvl": 64, "h100-pcie": 64, "a100-80gb": 32,
                 "a100-40gb": 32, "l40s": 32, "l4": 32, "a10": 32, "rtx-6000-ada": 32, "rtx-a6000": 32,
                 "rtx-4090": 32, "rtx-3090": 32, "t4": 16}

# What nvidia-smi reports as total memory (MiB): a card's physical capacity, often below its marketed GB
# (an L40S sold as 48 GB has 46068 MiB = 45.0 GiB). The cheat model grants a card all of it.
PHYSICAL_MIB = {"h200": 143771, "h200-nvl": 143771, "h100-sxm": 81559, "h100-nvl": 95830, "h100-pcie": 81559,
                "a100-80gb": 81920, "a100-40gb": 40960, "l40s": 46068, "l4": 23034, "a10": 23028,
                "rtx-6000-ada": 49140, "rtx-a6000": 49140, "rtx-4090": 24564, "rtx-3090": 24576, "t4": 15360}


def physical_bytes(card: Profile) -> float:
    """A card's whole memory (nvidia-smi's total), or its profile's memory_gib GiB where not listed."""
    return PHYSICAL_MIB[card.key] * 2**20 if card.key in PHYSICAL_MIB else card.memory_gib * GIB


class MemoryRejected(GpuproofError):
    """An opened lane fails: `reason` is a stable code (docs/protocol.md), the message says what and where."""

    def __init__(self, reason: str, detail: str, lane: int | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.lane = lane


@dataclass(frozen=True)
class MemoryConfig:
    """Policy of the memory phase; every default is argued in docs/protocol.md, "Spec v2: memory phase"."""

    table_fraction: float = 0.90
    passes: float = 8.0
    steps: int = 64
    opened: int = 64
    overhead_max_s: float = 0.05
    compute_sigma: float = 0.03
    rtt_sigma_s: float = 0.02
    max_rtt_allowance_s: float = 0.2
    false_failure_budget: float = 5e-5
    deadline_factor: float = 3.0
    deadline_floor_s: float = 10.0

    def __post_init__(self) -> None:
        if not 0 < self.table_fraction <= 1:
            raise InvalidParameter("table_fraction", f"must be in (0, 1], got {self.table_fraction!r}")
        if not 0 < self.false_failure_budget < 0.5:
            raise InvalidParameter("false_failure_budget", "must be in (0, 0.5)")
        for name in ("passes", "steps", "opened"):
            if not getattr(self, name) > 0:
                raise InvalidParameter(name, f"must be positive, got {getattr(self, name)!r}")

    @property
    def z(self) -> float:
        return -NormalDist().inv_cdf(self.false_failure_budget)


def round_bytes(params: ChallengeParams) -> int:
    return params.m * params.n * 4


def table_rounds_needed(params: ChallengeParams, profile: Profile, config: MemoryConfig | None = None) -> int:
    """R_T: whole rounds of C that make at least `table_fraction` of the claimed card's memory (its
    physical total, `physical_bytes`: what a renter of that model gets)."""
    config = config or MemoryConfig()
    return max(1, math.ceil(config.table_fraction * physical_bytes(profile) / round_bytes(params)))


def size_for_memory(params: ChallengeParams, profile: Profile, config: MemoryConfig | None = None) -> ChallengeParams:
    """The challenge with at least R_T rounds: where the compute target gives fewer (h200-nvl: 430 rounds
    of 256 MiB for a 480-round table), R is raised, and the compute phase's limits follow from the new R."""
    need = table_rounds_needed(params, profile, config)
    if params.rounds >= need or profile.arch == "cpu":
        return params
    return ChallengeParams(params.seed, params.m, params.n, params.k, need)


def plan_memory(params: ChallengeParams, profile: Profile, config: MemoryConfig | None = None) -> MemoryPlan:
    """The memory plan of a challenge on a claimed profile: a table of at least `table_fraction` of the
    claimed memory (whole rounds, at most all R of them: see `size_for_memory`), and lanes enough for
    `passes` table reads."""
    config = config or MemoryConfig()
    table_rounds = min(params.rounds, table_rounds_needed(params, profile, config))
    leaves = table_rounds * params.leaves_per_round
    lanes = max(config.opened, math.ceil(config.passes * leaves / config.steps))
    return MemoryPlan(params, table_rounds, lanes, config.steps, config.opened)


def needs_memory_phase(spec: str, profile: Profile) -> bool:
    """Whether a challenge of `spec` on a claimed `profile` has a memory phase: spec v2 (or later) on a
    profiled card with memory to prove. A CPU profile has none at the gateway (its walk time at a toy size
    says nothing; `gpuproof challenge local` plays it, shown and not judged), nor an unprofiled claim."""
    from gpuproof.kernels.spec import definition

    return (definition(spec).version >= 2 and profile.is_profiled and profile.arch != "cpu"
            and profile.memory_gib > 0)


MEMORY_PASS, MEMORY_FAIL, MEMORY_MISSING = "pass", "fail", "missing"


def memory_status(spec: str | None, profile: Profile | None, verdict: Mapping[str, Any]) -> str | None:
    """What a stored verdict says of memory, for trust and settlement (`VerdictRecord.memory`): None when
    it has no memory finding and its challenge needs none (v1, a CPU or unprofiled claim, or `spec` or
    `profile` unknown); "pass" or "fail" from its memory finding; "missing" when it has none but needs one
    (a v2 verdict reached before the gateway played the phase, or a timeout): it proves no memory, so no
    class."""
    finding = verdict.get("memory")
    if isinstance(finding, Mapping):
        return MEMORY_PASS if finding.get("passed") is True else MEMORY_FAIL
    if spec is None or profile is None or not needs_memory_phase(spec, profile):
        return None
    return MEMORY_MISSING


def draw_lanes(plan: MemoryPlan) -> list[int]:
    """The lanes to open: `plan.opened` uniform draws (repeats allowed) from the OS CSPRNG, made only after
    the walk root is stored."""
    return [secrets.randbelow(plan.lanes) for _ in range(plan.opened)]


# ------------------------------------------------------------------------------------------------
# The lane checks
# ------------------------------------------------------------------------------------------------

class _PadCache:
    """Pads of the leaves the opened lanes visit: lanes often share a leaf at small sizes."""

    def __init__(self, seed: bytes) -> None:
        self.pk = memory.pad_key(seed)
        self.cache: dict[tuple[int, int], np.ndarray] = {}

    def __call__(self, round_index: int, leaf: int) -> np.ndarray:
        key = (round_index, leaf)
        if key not in self.cache:
            self.cache[key] = memory.leaf_pad(self.pk, round_index, leaf)
        return self.cache[key]


def check_lanes(plan: MemoryPlan, roots: Sequence[bytes], nonce: bytes, walk_root: bytes,
                drawn: Sequence[int], openings: Sequence[LaneOpening]) -> None:
    """Re-walk every drawn lane from its seed, checking each leaf it reads against the committed round
    root at the address the walk itself derives, then its final state against the walk root.

    Returns None when all check; raises MemoryRejected with the first failure otherwise. The order of
    checks, cheapest first: `bad-commitment`, `missing-lane`, `bad-length`, `bad-lane-path`, then step by
    step `bad-leaf-path`, and last `wrong-state`. All lanes walk together, step by step (NumPy over lanes).
    """
    params = plan.params
    if len(roots) != params.rounds or len(walk_root) != 32:
        raise MemoryRejected("bad-commitment", f"{len(roots)} round roots and a {len(walk_root)}-byte walk root, "
                             f"want {params.rounds} and 32")
    if len(openings) != len(drawn):
        raise MemoryRejected("missing-lane", f"{len(openings)} lanes opened, {len(drawn)} drawn")
    for want, opening in zip(drawn, openings, strict=True):
        if opening.lane != want:
            raise MemoryRejected("missing-lane", f"lane {opening.lane} sent where lane {want} was drawn", want)
        if len(opening.state) != memory.STATE_BYTES or len(opening.leaves) != plan.steps \
                or len(opening.leaf_paths) != plan.steps or any(len(x) != CHUNK_BYTES for x in opening.leaves):
            raise MemoryRejected("bad-length", f"lane {want}: want a {memory.STATE_BYTES}-byte state and "
                                 f"{plan.steps} leaves of {CHUNK_BYTES} bytes with their paths", want)
        try:
            merkle.verify_inclusion(want, plan.lanes, merkle.leaf_hash(opening.state), opening.path, walk_root)
        except ProofError as exc:
            raise MemoryRejected("bad-lane-path", f"lane {want}: {exc}", want) from None
    lanes = np.array(drawn, dtype=np.uint64)
    wk = memory.walk_key(params.seed, roots[-1], nonce)
    states = memory.lane_seeds(wk, lanes)
    pads = _PadCache(params.seed)
    size = params.leaves_per_round
    for t in range(plan.steps):
        where = memory.addresses(states, plan.table_leaves)
        words = np.empty((len(drawn), memory.WORDS_PER_LEAF), dtype=np.uint32)
        for i, (opening, address) in enumerate(zip(openings, where.tolist(), strict=True)):
            r, leaf = plan.locate(address)
            raw = opening.leaves[t]
            try:
                merkle.verify_inclusion(leaf, size, merkle.leaf_hash(raw), opening.leaf_paths[t], roots[r])
            except ProofError as exc:
                raise MemoryRejected("bad-leaf-path", f"lane {opening.lane} step {t} (round {r} leaf {leaf}): {exc}",
                                     opening.lane) from None
            words[i] = np.frombuffer(raw, dtype="<u4") ^ pads(r, leaf)
        states = memory.step(states, words)
    for opening, state in zip(openings, states, strict=True):
        got = memory.state_bytes(state)
        if not hmac.compare_digest(got, opening.state):
            raise MemoryRejected("wrong-state", f"lane {opening.lane} ends in state {got.hex()}, the prover "
                                 f"committed {opening.state.hex()}", opening.lane)


# ------------------------------------------------------------------------------------------------
# Timing of the walk
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class WalkThresholds:
    """The walk's timing bounds, fixed at issue: expected, fast and slow limits and the deadline (s)."""

    expected_s: float
    fast_s: float
    slow_s: float
    deadline_s: float


def walk_thresholds(plan: MemoryPlan, profile: Profile, config: MemoryConfig | None = None) -> WalkThresholds:
    """Bounds of the nonce-to-walk-root time of an honest card of `profile`: the same construction as the
    compute phase's (docs/protocol.md "Timing"), with the walk band [walk_eff_low, walk_eff_high] x
    bandwidth_gbs and an overhead of up to `overhead_max_s` (lane tree, launch, host synchronisation)."""
    config = config or MemoryConfig()
    z = config.z
    slowest = plan.walk_bytes / profile.bandwidth_low
    fastest = plan.walk_bytes / profile.bandwidth_high
    slow_s = slowest + config.overhead_max_s + z * math.hypot(slowest * config.compute_sigma, config.rtt_sigma_s)
    fast_s = max(0.0, fastest - z * math.hypot(fastest * config.compute_sigma, config.rtt_sigma_s))
    deadline_s = max(config.deadline_floor_s, config.deadline_factor * slow_s)
    return WalkThresholds(plan.walk_bytes / profile.bandwidth_typical, fast_s, slow_s, deadline_s)


def honest_walk_failure_probability(plan: MemoryPlan, profile: Profile, config: MemoryConfig | None = None,
                                    eff: float | None = None, overhead_s: float | None = None) -> float:
    """P(an honest card at walk efficiency `eff` (default walk_eff_low) and the full overhead is judged slow)."""
    config = config or MemoryConfig()
    eff = profile.walk_eff_low if eff is None else eff
    overhead = config.overhead_max_s if overhead_s is None else overhead_s
    walk = plan.walk_bytes / (profile.bandwidth_gbs * 1e9 * eff)
    sd = math.hypot(walk * config.compute_sigma, config.rtt_sigma_s)
    return 1.0 - NormalDist(walk + overhead, sd).cdf(walk_thresholds(plan, profile, config).slow_s)


# ------------------------------------------------------------------------------------------------
# The cheat model
# ------------------------------------------------------------------------------------------------

def c_entropy_bits(k: int, value_variance: float) -> float:
    """Differential entropy (bits) of one C entry: a sum of k products of independent values of the given
    variance is close to normal with variance k * var^2; h = log2(sd * sqrt(2 pi e))."""
    return math.log2(math.sqrt(k) * value_variance * math.sqrt(2 * math.pi * math.e))


V1_VARIANCE = (16**2 - 1) / 12  # nibbles in [-8, 7]
V2_VARIANCE = (256**2 - 1) / 12  # full-range int8 in [-128, 127]


def compressed_ratio(k: int) -> float:
    """The best ratio a cheater could store C at: the entropy bound of the more compressible value range
    (v1's nibbles), whichever spec the challenge is, as a fraction of 32 bits."""
    return min(1.0, c_entropy_bits(k, V2_VARIANCE) / 32)


def _int32_ops(card: Profile) -> float:
    return INT32_TOPS.get(card.key, max(INT32_TOPS.values())) * 1e12


def _host_link(card: Profile) -> float:
    return HOST_LINK_GBS.get(card.key, max(HOST_LINK_GBS.values())) * 1e9


def pad_seconds_per_leaf(card: Profile, ops_per_compression: float = SHA_OPS_CHEAT) -> float:
    """Time one pad (32 SHA-256 compressions) takes a card that devotes its whole integer pipe to it."""
    return memory.PAD_PIECES * ops_per_compression / _int32_ops(card)


def working_set_bytes(params: ChallengeParams) -> int:
    """A, B and the tree of the last round: what the card holds beside the table."""
    return params.m * params.k + params.n * params.k + 2 * 32 * params.leaves_per_round


@dataclass(frozen=True)
class CheatPlan:
    """A cheater's best way to walk a table it cannot hold: fractions of the table leaves stored plainly
    (`plain`), stored as compressed C with pads recomputed per visit (`compressed`), fetched from host
    memory (`host`) or recomputed from A_r and B (`recomputed`), and the walk time that buys."""

    plain: float
    compressed: float
    host: float
    recomputed: float
    seconds: float
    limit: str


def cheat_seconds(plan: MemoryPlan, card: Profile, plain: float, compressed: float = 0.0, host: float = 0.0,
                  recomputed: float = 0.0, kept: int = 0) -> tuple[float, str]:
    """(seconds, busiest resource) of a walk by `card` with table leaves split as given (fractions summing to
    1): every resource at its datasheet peak and all of them at once, so the time is the busiest one's.

    A visit to a leaf costs: plain, 1 KiB of HBM; compressed, rho KiB of HBM (rho: C's entropy bound, plus
    `kept` stored pad digests of 32 bytes) and the pad's other 32 - kept compressions; host, 1 KiB over the
    host link; recomputed, 2 * 256 * k tensor operations (a leaf is 256 columns of a row: 256 rows of B)
    and a pad. Tensor work at the int8 peak: INT4 halves of full-range int8 cost twice the products at
    twice the rate (spec v2), so they buy nothing here.
    """
    visits = plan.lanes * plan.steps
    size = compressed_ratio(plan.params.k) + kept * 32 / CHUNK_BYTES
    pad_s = pad_seconds_per_leaf(card)
    pad_c = pad_s * (1 - kept / memory.PAD_PIECES)
    loads = {"memory bandwidth": visits * (plain + size * compressed) * CHUNK_BYTES / (card.bandwidth_gbs * 1e9),
             "pad recomputation": visits * (compressed * pad_c + recomputed * pad_s),
             "host link": visits * host * CHUNK_BYTES / _host_link(card),
             "recomputing rows": visits * recomputed * 2.0 * 256 * plan.params.k / card.rate_peak}
    limit = max(loads, key=loads.__getitem__)
    return loads[limit], limit


def available_fraction(plan: MemoryPlan, card: Profile) -> float:
    """The share of the table a card can hold: all its physical memory less the working set, over the table."""
    return max(0.0, (physical_bytes(card) - working_set_bytes(plan.params)) / plan.table_bytes)


def best_cheat(plan: MemoryPlan, card: Profile, memory_bytes: float | None = None) -> CheatPlan:
    """The fastest walk the model allows `card` (with `memory_bytes` usable, default all its memory less
    the working set) over `plan`'s table, by `cheat_seconds`: a grid search over the fractions stored
    plainly, compressed (keeping 0, 4, 8, ... pad digests beside each), on the host and recomputed
    (steps of 1/100 and 1/20).
    """
    a = available_fraction(plan, card) if memory_bytes is None else max(0.0, memory_bytes / plan.table_bytes)
    if a >= 1:
        t, limit = cheat_seconds(plan, card, 1.0)
        return CheatPlan(1.0, 0.0, 0.0, 0.0, t, limit)
    rho = compressed_ratio(plan.params.k)
    best: CheatPlan | None = None
    for kept in range(0, memory.PAD_PIECES + 1, 4):
        size = rho + kept * 32 / CHUNK_BYTES
        if size >= 1:
            break
        for ci in range(101):
            c = ci / 100
            y = min(1.0 - c, a - size * c)
            if y < 0:
                break
            missing = 1.0 - y - c
            for hi in range(21):
                host = missing * hi / 20
                t, limit = cheat_seconds(plan, card, y, c, host, missing - host, kept)
                if best is None or t < best.seconds:
                    best = CheatPlan(y, c, host, missing - host, t, limit)
    assert best is not None
    return best


def pass_probability(cheat_s: float, limits: WalkThresholds, opened: int, config: MemoryConfig) -> tuple[float, float]:
    """(fraction of lanes a cheater can walk in time, P(pass)): it walks as many lanes as the slow limit
    plus the RTT-allowance cap allow and fakes the rest; each opened lane is then real with that fraction,
    and a faked one survives only by guessing a 128-bit state."""
    budget = limits.slow_s + config.max_rtt_allowance_s
    f = min(1.0, budget / cheat_s) if cheat_s > 0 else 1.0
    return f, min(1.0, f**opened + opened * 2.0**-128)


@dataclass(frozen=True)
class SubstituteBound:
    """What one substitute card can do against a claim: its best cheat and its stated pass probability."""

    claimed: str
    card: str
    cheat: CheatPlan
    lanes_in_time: float
    pass_probability: float


def substitute_bound(params: ChallengeParams, claimed: Profile, card: Profile,
                     config: MemoryConfig | None = None) -> SubstituteBound:
    config = config or MemoryConfig()
    plan = plan_memory(params, claimed, config)
    cheat = best_cheat(plan, card)
    f, p = pass_probability(cheat.seconds, walk_thresholds(plan, claimed, config), plan.opened, config)
    return SubstituteBound(claimed.key, card.key, cheat, f, p)


def best_substitutes(params: ChallengeParams, claimed: Profile, profiles: Mapping[str, Profile] | None = None,
                     config: MemoryConfig | None = None) -> tuple[SubstituteBound | None, SubstituteBound | None]:
    """(best card that cannot hold the table, best card that holds it with less bandwidth than claimed): the
    substitutes of each kind with the highest pass probability (None when no profiled card is such). The
    first is the memory-capacity finding's, the second the bandwidth class's."""
    profiles = load_profiles() if profiles is None else profiles
    plan = plan_memory(params, claimed, config)
    cards = [p for p in profiles.values() if p.key != claimed.key and p.arch != "cpu"]
    short = [substitute_bound(params, claimed, p, config) for p in cards if available_fraction(plan, p) < 1]
    slower = [substitute_bound(params, claimed, p, config) for p in cards
              if available_fraction(plan, p) >= 1 and p.bandwidth_gbs < claimed.bandwidth_gbs]

    def top(bounds: list[SubstituteBound]) -> SubstituteBound | None:
        return max(bounds, key=lambda b: (b.pass_probability, b.lanes_in_time), default=None)

    return top(short), top(slower)


def capacity_threshold(params: ChallengeParams, claimed: Profile, config: MemoryConfig | None = None,
                       target: float = 1e-6) -> float:
    """The largest share of the claimed card's memory with which a card otherwise like it (same bandwidth,
    integer rate and host link: the claimed card with memory lent elsewhere, or a smaller sibling) passes
    with probability at most `target` by the model: every card with less memory than that is caught at
    least that surely. Bisection over the memory."""
    config = config or MemoryConfig()
    plan = plan_memory(params, claimed, config)
    limits = walk_thresholds(plan, claimed, config)
    full = physical_bytes(claimed)

    def p_pass(share: float) -> float:
        cheat = best_cheat(plan, claimed, memory_bytes=share * full - working_set_bytes(params))
        return pass_probability(cheat.seconds, limits, plan.opened, config)[1]

    lo, hi = 0.0, 1.0
    if p_pass(hi) <= target:
        return 1.0
    for _ in range(20):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if p_pass(mid) <= target else (lo, mid)
    return lo


def honest_extra_seconds(plan: MemoryPlan, profile: Profile) -> tuple[float, float]:
    """(table fill, walk) seconds an honest card spends on the memory phase: pads at the measured hash
    rate, the walk at the middle of its band. The fill can overlap the next round's GEMM (a second
    stream: pads use the integer pipe, the GEMM the tensor cores); this is its cost with no overlap."""
    fill = plan.table_leaves * pad_seconds_per_leaf(profile, SHA_OPS_MEASURED)
    return fill, plan.walk_bytes / profile.bandwidth_typical


# ------------------------------------------------------------------------------------------------
# The verdict
# ------------------------------------------------------------------------------------------------

WALK_CLASSES = (Timing.CONSISTENT, Timing.SLOWER, Timing.FASTER, Timing.TIMEOUT)
"""The classes the walk's timing can take: a challenge's, less `unprofiled` (a walk is planned for a profiled card
only)."""


def best_bandwidth_match(rate: float, profiles: Mapping[str, Profile] | None = None) -> Profile:
    """The profile whose walk band best explains a measured walk rate (bytes/s): a band containing it
    (nearest typical rate in log space), else the nearest band edge."""
    profiles = load_profiles() if profiles is None else profiles

    def distance(p: Profile) -> tuple[int, float]:
        if p.bandwidth_low <= rate <= p.bandwidth_high:
            return 0, abs(math.log(rate / p.bandwidth_typical))
        edge = p.bandwidth_low if rate < p.bandwidth_low else p.bandwidth_high
        return 1, abs(math.log(rate / edge))

    return min((p for p in profiles.values() if p.arch != "cpu"), key=distance)


@dataclass(frozen=True)
class MemoryFinding:
    """The memory phase's part of a verdict: correctness of the opened lanes, the walk's timing class, the
    memory-capacity finding and the bandwidth class, each with its figure, limit and stated bound."""

    passed: bool
    failure: str | None
    walk_s: float
    walk_class: Timing
    limits: WalkThresholds
    walk_gbs: float
    slow_limit_gbs: float
    table_bytes: int
    claimed_memory_bytes: int
    capacity: str
    capacity_pass_probability: float
    capacity_substitute: str | None
    bandwidth_class: str
    bandwidth_pass_probability: float
    bandwidth_substitute: str | None
    reasons: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k not in ("limits", "reasons")}
        out["walk_class"] = self.walk_class.value  # the wire's plain string (verifier/wire.py)
        out["limits"] = vars(self.limits) | {}
        out["reasons"] = list(self.reasons)
        return out


def memory_finding(plan: MemoryPlan, claimed: Profile, failure: MemoryRejected | None, walk_s: float,
                   config: MemoryConfig | None = None, profiles: Mapping[str, Profile] | None = None,
                   bounds: tuple[SubstituteBound | None, SubstituteBound | None] | None = None) -> MemoryFinding:
    """The memory finding from the lane checks' outcome and the measured walk time (nonce sent to walk root
    received, RTT allowance taken off). `bounds` (from `best_substitutes`) may be passed to save work."""
    config = config or MemoryConfig()
    if isinstance(walk_s, bool) or not isinstance(walk_s, int | float) or not math.isfinite(walk_s):
        raise InvalidParameter("walk_s", f"must be a finite number of seconds, got {walk_s!r}")
    limits = walk_thresholds(plan, claimed, config)
    if walk_s > limits.deadline_s:
        walk_class = Timing.TIMEOUT
    elif walk_s > limits.slow_s:
        walk_class = Timing.SLOWER
    elif walk_s < limits.fast_s:
        walk_class = Timing.FASTER
    else:
        walk_class = Timing.CONSISTENT
    rate = plan.walk_bytes / max(walk_s, 1e-9)
    mem_bound, bw_bound = best_substitutes(plan.params, claimed, profiles, config) if bounds is None else bounds
    timed_ok = walk_class in (Timing.CONSISTENT, Timing.FASTER)
    passed = failure is None and timed_ok
    claimed_bytes = int(physical_bytes(claimed))
    if failure is not None:
        capacity = "failed"
    elif walk_class in (Timing.TIMEOUT, Timing.SLOWER):
        capacity = "not-shown"
    else:
        capacity = "holds-table"
    band = best_bandwidth_match(rate, profiles)
    reasons = []
    if failure is not None:
        reasons.append(f"an opened lane failed ({failure.reason}): {failure.detail}")
    reasons.append(f"walk of {plan.walk_bytes / 1e9:.1f} GB took {walk_s:.3f} s ({rate / 1e9:.0f} GB/s); slow limit "
                   f"{limits.slow_s:.3f} s ({plan.walk_bytes / limits.slow_s / 1e9:.0f} GB/s): {walk_class}")
    reasons.append(f"table {plan.table_bytes / GIB:.1f} GiB = {plan.table_bytes / claimed_bytes:.0%} of the claimed "
                   f"{claimed_bytes / GIB:.1f} GiB: {capacity}")
    if mem_bound is not None:
        reasons.append(f"best card with less memory ({mem_bound.card}) passes with probability at most "
                       f"{mem_bound.pass_probability:.2g} (limited by {mem_bound.cheat.limit})")
    return MemoryFinding(
        passed=passed, failure=None if failure is None else failure.reason, walk_s=walk_s, walk_class=walk_class,
        limits=limits, walk_gbs=rate / 1e9, slow_limit_gbs=plan.walk_bytes / limits.slow_s / 1e9,
        table_bytes=plan.table_bytes, claimed_memory_bytes=claimed_bytes, capacity=capacity,
        capacity_pass_probability=mem_bound.pass_probability if mem_bound else 0.0,
        capacity_substitute=mem_bound.card if mem_bound else None, bandwidth_class=band.key,
        bandwidth_pass_probability=bw_bound.pass_probability if bw_bound else 0.0,
        bandwidth_substitute=bw_bound.card if bw_bound else None, reasons=tuple(reasons))


def judge_memory(plan: MemoryPlan, claimed: Profile, roots: Sequence[bytes], nonce: bytes, walk_root: bytes,
                 drawn: Sequence[int], openings: Sequence[LaneOpening], walk_s: float,
                 config: MemoryConfig | None = None, profiles: Mapping[str, Profile] | None = None) -> MemoryFinding:
    """The memory verdict of one challenge: `check_lanes`, then `memory_finding`. Pure."""
    try:
        check_lanes(plan, roots, nonce, walk_root, drawn, openings)
        failure = None
    except MemoryRejected as exc:
        failure = exc
    return memory_finding(plan, claimed, failure, walk_s, config, profiles)



def verified_class_v2(claimed: Profile, compute_class: Profile | None, finding: MemoryFinding) -> Profile | None:
    """The class a spec v2 challenge proves, from all three findings: the compute class (what
    `verifier.hardware.verified_class` gives for the compute phase), the memory-capacity finding and the
    bandwidth class. It is the claimed profile only when the compute phase verified it (or better, by
    `at_or_above`), the lanes checked and the walk showed the table held at the claimed class's memory
    speed; otherwise nothing. Settlement's "at or above the paid class" then compares this profile's int8
    rate, memory and bandwidth (`verifier.hardware.at_or_above`), as it does today. The gateway's stored
    verdicts carry the finding; `verifier.hardware.verified_class` applies this rule to them (through
    `VerdictRecord.memory`, docs/protocol.md "Spec v2: memory phase")."""
    from gpuproof.verifier.hardware import at_or_above

    if compute_class is None or not at_or_above(compute_class, claimed):
        return None
    if not finding.passed or finding.capacity != "holds-table":
        return None
    return claimed
