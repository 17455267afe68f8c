"""The reference training job: a small MLP on synthetic data, in NumPy, deterministic.

Used by the training-proof tests and (later) the demo. Every step is a pure function of the state and
the batch indices, computed in float32 with single-threaded BLAS so that a replay on the same kind of
machine is bit-identical (`exact` mode); across machines the `tolerance` mode applies.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

State = dict[str, np.ndarray]


@dataclass(frozen=True)
class MLPJob:
    seed: int = 7
    in_dim: int = 32
    hidden: int = 64
    classes: int = 10
    samples: int = 2048
    batch: int = 32
    lr: float = 0.2

    # A commitment every 50 steps: this stand-in's step is so short that a commitment every few steps would
    # outrun the gateway's default per-provider rate limit (settings.provider_rate_per_s); at 50 it stays
    # within it (the step's time is in docs/performance.md, "Checkpoint commitments"). A real job's steps are
    # longer.
    checkpoint_interval = 50

    def data(self) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(self.seed)
        x = rng.standard_normal((self.samples, self.in_dim)).astype(np.float32)
        w = rng.standard_normal((self.in_dim, self.classes)).astype(np.float32)
        return x, np.argmax(x @ w, axis=1).astype(np.int64)

    def init_state(self) -> State:
        rng = np.random.default_rng(self.seed + 1)
        return {"w1": (rng.standard_normal((self.in_dim, self.hidden)) * 0.1).astype(np.float32),
                "b1": np.zeros(self.hidden, np.float32),
                "w2": (rng.standard_normal((self.hidden, self.classes)) * 0.1).astype(np.float32),
                "b2": np.zeros(self.classes, np.float32)}

    def batch_indices(self, step: int) -> np.ndarray:
        """The batch of step `step`: what the provider commits to having used."""
        digest = hashlib.sha256(f"gpuproof.batch.{self.seed}.{step}".encode()).digest()
        return np.random.default_rng(int.from_bytes(digest[:8], "little")).choice(self.samples, self.batch,
                                                                                   replace=False)

    def step(self, state: State, indices: np.ndarray, data: tuple[np.ndarray, np.ndarray] | None = None,
             threads: int = 1) -> State:
        """One SGD step on the given batch (a new state; the input is not changed), BLAS on `threads`."""
        x, y = data if data is not None else self.data()
        xb, yb = x[indices], y[indices]
        with threadpool_limits(threads):
            h = np.maximum(xb @ state["w1"] + state["b1"], 0)
            logits = h @ state["w2"] + state["b2"]
            logits = logits - logits.max(axis=1, keepdims=True)
            p = np.exp(logits)
            p /= p.sum(axis=1, keepdims=True)
            p[np.arange(len(yb)), yb] -= 1
            g = (p / len(yb)).astype(np.float32)
            gw2, gb2 = h.T @ g, g.sum(axis=0)
            gh = (g @ state["w2"].T) * (h > 0)
            gw1, gb1 = xb.T @ gh, gh.sum(axis=0)
        lr = np.float32(self.lr)
        return {"w1": state["w1"] - lr * gw1, "b1": state["b1"] - lr * gb1,
                "w2": state["w2"] - lr * gw2, "b2": state["b2"] - lr * gb2}

    def loss(self, state: State) -> float:
        x, y = self.data()
        h = np.maximum(x @ state["w1"] + state["b1"], 0)
        logits = h @ state["w2"] + state["b2"]
        logits = logits - logits.max(axis=1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        return float(-logp[np.arange(len(y)), y].mean())


WORKLOADS = {"mlp": MLPJob}


def workload_from_policy(spec: dict) -> MLPJob:
    """The job a policy's `workload` names ({"name": "mlp", "params": {...}}); only the workloads shipped
    here: a validator never imports code a policy names."""
    from gpuproof.kernels.errors import InvalidParameter

    name = spec.get("name", "mlp") if spec else "mlp"
    if name not in WORKLOADS:
        raise InvalidParameter("workload", f"unknown workload {name!r}; this validator replays {sorted(WORKLOADS)}")
    params = spec.get("params", {}) if spec else {}
    try:
        return WORKLOADS[name](**params)
    except TypeError as exc:
        raise InvalidParameter("workload.params", str(exc)) from None
