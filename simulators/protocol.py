"""Simulated provers, honest and dishonest, for the attack suite and docs/threat-model.md.

Each strategy plays the prover's side of verifier.protocol at small sizes on the CPU reference, with a
simulated clock, so that thousands of challenges run in seconds. `run_strategy` plays one challenge end
to end and returns the verdict; `detection_table` runs each strategy many times against its bound.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
from gpuproof.kernels import merkle, reference
from gpuproof.kernels.backend import Opening
from gpuproof.kernels.spec import ChallengeParams, prev_root_of
from gpuproof.verifier.protocol import Challenge, Verdict, Verifier
from gpuproof.verifier.timing import Timing, TimingConfig, classify
from scipy.stats import binom

SMALL_SHAPE = (32, 256, 64, 4)  # m, n, k, rounds


@dataclass
class Committed:
    """What a prover holds after committing: per round, the C it committed to and the tree over it."""

    roots: list[bytes]
    c: list[np.ndarray | None]
    trees: list[merkle.MerkleTree | None]

    def honest_opening(self, params: ChallengeParams, r: int, i: int) -> Opening:
        tree, c = self.trees[r], self.c[r]
        assert tree is not None and c is not None, "this round was never computed"
        return Opening(r, i, c[i], tuple(reference.row_path(tree, params, i)))


def _commit_rows(params: ChallengeParams, rows_of_round: Callable[[int, bytes], np.ndarray]) -> Committed:
    """Commit round by round to whatever C `rows_of_round(r, prev_root)` gives, chaining the roots."""
    out = Committed([], [], [])
    for r in range(params.rounds):
        c = rows_of_round(r, prev_root_of(out.roots, r))
        tree = reference.round_tree(c)
        out.roots.append(tree.root)
        out.c.append(c)
        out.trees.append(tree)
    return out


class Strategy:
    """A prover: commits (roots, simulated seconds of work) then answers an opening request."""

    name = "strategy"
    description = ""

    def commit(self, params: ChallengeParams) -> Committed:
        raise NotImplementedError

    def open(self, params: ChallengeParams, held: Committed, pairs: Sequence[tuple[int, int]],
             x: np.ndarray) -> list[Opening]:
        return [held.honest_opening(params, r, i) for r, i in pairs]

    def bound(self, params: ChallengeParams, spot_checks: int) -> float:
        """Upper bound on the probability that this strategy passes (1.0 for the honest prover)."""
        return 0.0


class Honest(Strategy):
    name = "honest"
    description = "computes everything"

    def commit(self, params):
        cpu = reference.CpuBackend()
        return _commit_rows(params, lambda r, prev: cpu.round_c(params, r, prev))

    def bound(self, params, spot_checks):
        return 1.0


class SkipRows(Strategy):
    """Computes a fraction 1 - delta of the rows, commits random values for the rest."""

    def __init__(self, delta: float) -> None:
        self.delta = delta
        self.name = f"skip {delta:.0%} of rows"
        self.description = "garbage in skipped rows (random ones, the same number each round), committed"

    def skipped_per_round(self, params: ChallengeParams) -> int:
        return max(1, round(self.delta * params.m))

    def commit(self, params):
        cpu = reference.CpuBackend()
        rng = np.random.default_rng(secrets.randbits(64))
        count = self.skipped_per_round(params)

        def rows(r, prev):
            c = cpu.round_c(params, r, prev)
            skipped = rng.choice(params.m, size=count, replace=False)
            c[skipped] = rng.integers(-2**20, 2**20, size=(count, params.n), dtype=np.int32)
            return c

        return _commit_rows(params, rows)

    def bound(self, params, spot_checks):
        computed = 1 - self.skipped_per_round(params) / params.m
        return computed**spot_checks + spot_checks * 2.0**-32


class GarbageRoots(Strategy):
    """Computes some rounds, commits random roots for the others (and opens honest rows there)."""

    def __init__(self, bad_fraction: float) -> None:
        self.bad_fraction = bad_fraction
        self._bad: set[int] = set()
        self.name = f"garbage roots in {bad_fraction:.0%} of rounds"
        self.description = "random root, no tree, for skipped rounds"

    def commit(self, params):
        cpu = reference.CpuBackend()
        held = Committed([], [], [])
        self._bad = set(random.sample(range(params.rounds), max(1, round(self.bad_fraction * params.rounds))))
        for r in range(params.rounds):
            c = cpu.round_c(params, r, prev_root_of(held.roots, r))
            tree = reference.round_tree(c)
            held.roots.append(secrets.token_bytes(32) if r in self._bad else tree.root)
            held.c.append(c)
            held.trees.append(tree)
        return held

    def bound(self, params, spot_checks):
        return (1 - len(self._bad) / params.rounds) ** spot_checks


class WrongSeed(Strategy):
    name = "wrong seed"
    description = "answers another challenge (its own seed), consistently"

    def commit(self, params):
        other = replace(params, seed=secrets.token_bytes(32))
        return Honest().commit(other)

    def bound(self, params, spot_checks):
        return spot_checks * 2.0**-32


class StaleReplay(Strategy):
    name = "stale replay"
    description = "replays an older challenge's commitment and rows"

    def __init__(self) -> None:
        self._old: tuple[ChallengeParams, Committed] | None = None

    def commit(self, params):
        old_params = replace(params, seed=secrets.token_bytes(32))
        held = Honest().commit(old_params)
        self._old = (old_params, held)
        return held

    def bound(self, params, spot_checks):
        return spot_checks * 2.0**-32


class TamperAfterCommit(Strategy):
    """Commits honestly, then alters every opening it sends (subclasses say how)."""

    def commit(self, params):
        return Honest().commit(params)

    def tamper(self, params: ChallengeParams, opening: Opening) -> Opening:
        raise NotImplementedError

    def open(self, params, held, pairs, x):
        return [self.tamper(params, held.honest_opening(params, r, i)) for r, i in pairs]


class ChangedAfterCommit(TamperAfterCommit):
    name = "row changed after commit"
    description = "commits honestly, then sends each opened row with one value changed"

    def tamper(self, params, opening):
        values = opening.values.copy()
        values[random.randrange(params.n)] += 1
        return Opening(opening.round, opening.row, values, opening.path)


class ForgedProof(TamperAfterCommit):
    name = "forged or truncated proof"
    description = "commits honestly, sends paths with a flipped bit or a missing hash"

    def tamper(self, params, opening):
        path = list(opening.path)
        if not path:
            path = [secrets.token_bytes(32)]
        elif random.random() < 0.5:
            path.pop()
        else:
            j = random.randrange(len(path))
            path[j] = bytes([path[j][0] ^ 1]) + path[j][1:]
        return Opening(opening.round, opening.row, opening.values, tuple(path))


class RowsWithoutCommitment(Strategy):
    """The flaw in Prime Intellect's gpu-challenge: right answers about C without committed rows."""

    name = "right rows, nothing committed"
    description = "commits random roots, computes only the opened rows afterwards"

    def commit(self, params):
        return Committed([secrets.token_bytes(32) for _ in range(params.rounds)],
                         [None] * params.rounds, [None] * params.rounds)

    def open(self, params, held, pairs, x):
        b = reference.as_exact_float(reference.b_matrix(params), params.spec)
        out = []
        for r, i in pairs:
            a = reference.a_matrix(params, r, prev_root_of(held.roots, r), rows=1, row_offset=i)
            row = reference.matmul_exact(a, b)[0]
            # a path of the right length, made up: there is no tree to take it from
            length = merkle.inclusion_proof_length(i, params.m)
            out.append(Opening(r, i, row, tuple(secrets.token_bytes(32) for _ in range(length))))
        return out


STRATEGIES: list[Callable[[], Strategy]] = [
    Honest, lambda: SkipRows(0.05), lambda: SkipRows(0.25), lambda: GarbageRoots(0.25), WrongSeed,
    StaleReplay, ChangedAfterCommit, ForgedProof, RowsWithoutCommitment,
]


def run_strategy(strategy: Strategy, verifier: Verifier, shape=SMALL_SHAPE, model: str = "cpu-reference",
                 now: float = 1.8e9) -> tuple[Challenge, Verdict]:
    """One challenge against `strategy`, timed as an honest card of the claimed profile would be."""
    challenge = verifier.issue(model, now=now, shape=shape)
    held = strategy.commit(challenge.params)
    commitment = verifier.commit(challenge, held.roots, received_at=now + challenge.thresholds.expected_s,
                                 rtt_s=0.0)
    request = verifier.request_openings(challenge, commitment)
    openings = strategy.open(challenge.params, held, request.pairs, request.x)
    return challenge, verifier.judge(challenge, commitment, request, openings)


@dataclass(frozen=True)
class Row:
    strategy: str
    description: str
    runs: int
    passed: int
    bound: float
    detection: float
    consistent: bool  # the pass count is one the bound can produce (within_bound: binomial tail >= LUCK)
    cards: int = 0  # timing simulations: simulated cards, each with its own fixed efficiency
    cards_always: int = 0  # ... flagged on every one of its challenges
    cards_never: int = 0  # ... flagged on none of them


def detect(strategy_factory: Callable[[], Strategy], runs: int, verifier: Verifier,
           shape=SMALL_SHAPE) -> Row:
    passed = 0
    strategy = strategy_factory()
    bound = 0.0
    for _ in range(runs):
        strategy = strategy_factory()
        challenge, verdict = run_strategy(strategy, verifier, shape)
        bound = strategy.bound(challenge.params, challenge.spot_checks)
        passed += verdict.correctness == "pass"
    rate = passed / runs
    ok = passed == runs if isinstance(strategy, Honest) else within_bound(passed, runs, bound)
    return Row(strategy.name, strategy.description, runs, passed, bound, 1 - rate, ok)


LUCK = 1e-6
"""How unlikely a run's pass count may be, under a strategy's stated bound, before the bound is called wrong."""


def within_bound(passed: int, runs: int, bound: float) -> bool:
    """Whether `passed` of `runs` is what a pass probability of at most `bound` can produce: the binomial
    chance of `passed` or more is at least LUCK. (A normal-approximation slack, 4 sd, failed honest runs:
    at a bound of 1e-4, 2 passes of 1,000 happen 0.5% of the time, and a flaky check hides real ones.)"""
    if passed == 0:
        return True
    return float(binom.sf(passed - 1, runs, min(1.0, bound))) >= LUCK


def simulate_timing(claimed: str, actual: str, runs: int, verifier: Verifier,
                    rng: random.Random | None = None, cards: int | None = None) -> Row:
    """Cards of profile `actual` claiming `claimed`, honest work, the clock simulated from the model.

    `runs` challenges spread over `cards` simulated cards (default one card per 100 challenges). A real
    card's efficiency is a property of the card (its clocks, cooling, power limit), not of the challenge:
    each card's is drawn once, uniformly in its band, and kept for all its challenges; per challenge, the
    overhead is uniform in [0, overhead_max], the compute time jittered by compute_sigma and the RTT
    estimate by rtt_sigma (docs/protocol.md). The row counts the cards flagged on every challenge and on
    none: a card near the limit is flagged sometimes, most cards always or never.
    """
    rng = rng or random.Random(secrets.randbits(64))
    cfg: TimingConfig = verifier.config.timing
    prof = verifier.profiles[actual]
    cards = max(1, runs // 100) if cards is None else cards
    if not 1 <= cards <= runs:
        raise ValueError(f"cards must be in 1..runs ({runs}), got {cards}")
    flagged = always = never = 0
    for card in range(cards):
        eff = rng.uniform(prof.eff_low, prof.eff_high)  # fixed for this card
        challenges = runs // cards + (card < runs % cards)
        flagged_here = 0
        for _ in range(challenges):
            challenge = verifier.issue(claimed, now=0.0)
            p = challenge.params
            compute = p.operations / (prof.int8_tops * 1e12 * eff) * (1 + rng.gauss(0, cfg.compute_sigma))
            t = compute + rng.uniform(0, cfg.overhead_max_s) + rng.gauss(0, cfg.rtt_sigma_s)
            commitment = verifier.commit(challenge, [bytes(32)] * p.rounds, received_at=max(0.0, t), rtt_s=0.0)
            cls = classify(commitment.measured_s, challenge.thresholds, verifier.profile_of(challenge))
            flagged_here += cls in (Timing.SLOWER, Timing.TIMEOUT)
        flagged += flagged_here
        always += flagged_here == challenges
        never += flagged_here == 0
    name = f"{actual} claiming {claimed} (simulated clock)" if claimed != actual else \
        f"honest {actual} (simulated clock)"
    honest = claimed == actual
    # honest: no false failure allowed; a slower card: every challenge flagged
    return Row(name, "timing only", runs, runs - flagged, 1.0 if honest else 0.0, flagged / runs,
               flagged == 0 if honest else flagged == runs, cards, always, never)
