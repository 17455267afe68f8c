"""Training-work proofs at the library level: honest segments pass, every cheat fails with its reason.

(The gateway flow — drawing segments, uploads, signed replays — is not built yet; these are the checks it
will call.)
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from gpuproof.agent.checkpointing import CheckpointCommitter
from gpuproof.verifier import checkpoints
from gpuproof.verifier.replay import Opened, calibrate_tau, check_segment, step_with_threads
from gpuproof.verifier.workload import MLPJob

JOB = MLPJob()
DATA = JOB.data()
K = 4  # steps per commitment


def honest_run(steps: int = 24, job: MLPJob = JOB, tmp_path=None):  # noqa: ANN001
    committer = CheckpointCommitter(K, store=tmp_path)
    state = job.init_state()
    committer.start(state)
    states = {0: state}
    batches = {}
    for step in range(1, steps + 1):
        idx = job.batch_indices(step)
        state = job.step(state, idx, DATA if job is JOB else job.data())
        batches[step] = idx
        if committer.record(step, idx, state):
            states[step] = state
    return committer, states, batches


def openings(state, manifest, rng, count=4):  # noqa: ANN001
    out = []
    for _ in range(count):
        e = rng.choice(manifest)
        i = rng.randrange(e.chunks)
        chunk, path = checkpoints.open_chunk(state, manifest, e.name, i)
        out.append(Opened(e.name, i, chunk, tuple(path)))
    return out


def segment(committer, states, batches, j, rng, mode="exact", tau=None, end_state=None):  # noqa: ANN001
    start, end = committer.commitments[j], committer.commitments[j + 1]
    seg_batches = [batches[s] for s in range(start.step + 1, end.step + 1)]
    opened = openings(end_state if end_state is not None else states[end.step], list(end.manifest), rng)
    step = step_with_threads(JOB, 1)
    return check_segment(step, start, end, states[start.step], seg_batches, opened, mode, tau)


def test_the_reference_job_learns():
    _, states, _ = honest_run(40)
    assert JOB.loss(states[40]) < JOB.loss(states[0]) * 0.85


def test_honest_segments_never_fail_in_200_checks(tmp_path):
    committer, states, batches = honest_run(tmp_path=tmp_path)
    rng = random.Random(1)
    tau = calibrate_tau(lambda t: step_with_threads(JOB, t), states[0], [batches[s] for s in range(1, K + 1)])
    for n in range(200):
        j = rng.randrange(len(committer.commitments) - 1)
        v = segment(committer, states, batches, j, rng, mode="exact" if n % 2 else "tolerance", tau=tau)
        assert v.outcome == "pass", v
    assert committer.load(8)["w1"].shape == (32, 64)


def test_skipped_steps_with_interpolated_checkpoints_fail():
    committer = CheckpointCommitter(K)
    state0 = JOB.init_state()
    committer.start(state0)
    real = {0: state0}
    state = state0
    batches = {}
    for step in range(1, 2 * K + 1):
        idx = JOB.batch_indices(step)
        state = JOB.step(state, idx, DATA)
        batches[step] = idx
    real[2 * K] = state
    fake_mid = {k: (state0[k] + state[k]) / 2 for k in state}  # never trained: interpolated
    for step in range(1, 2 * K + 1):
        committer.record(step, batches[step], fake_mid if step == K else state)
    states = {0: state0, K: fake_mid, 2 * K: state}
    rng = random.Random(2)
    tau = 1e-4
    for mode in ("exact", "tolerance"):
        first = segment(committer, states, batches, 0, rng, mode, tau)
        second = segment(committer, states, batches, 1, rng, mode, tau)
        assert first.outcome == "fail" and second.outcome == "fail", (first, second)


def test_training_on_other_batches_than_committed_fails():
    committer, states, batches = honest_run(8)
    rng = random.Random(3)
    other = dict(batches)
    other[2] = JOB.batch_indices(999)  # the replayer is handed different batches than committed
    v = segment(committer, states, other, 0, rng)
    assert v.outcome == "fail" and "batches" in v.reason
    # a provider that trained on fewer batches but commits the schedule's hash: the replay differs
    lazy = CheckpointCommitter(K)
    s = JOB.init_state()
    lazy.start(s)
    lazy_states = {0: s}
    for step in range(1, K + 1):
        idx = JOB.batch_indices(step)
        if step != 3:  # step 3 skipped
            s = JOB.step(s, idx, DATA)
        lazy.record(step, idx, s)
    lazy_states[K] = s
    v = segment(lazy, lazy_states, batches, 0, rng)
    assert v.outcome == "fail" and ("differs" in v.reason)


def test_opened_chunks_not_in_the_root_fail():
    committer, states, batches = honest_run(8)
    start, end = committer.commitments[0], committer.commitments[1]
    manifest = list(end.manifest)
    chunk, path = checkpoints.open_chunk(states[K], manifest, "w1", 1)
    forged = Opened("w1", 1, bytes([chunk[0] ^ 1]) + chunk[1:], tuple(path))
    v = check_segment(step_with_threads(JOB, 1), start, end, states[0], [batches[s] for s in range(1, K + 1)],
                      [forged])
    assert v.outcome == "fail" and "not in the committed root" in v.reason and v.tensor == "w1" and v.chunk == 1


def test_another_jobs_checkpoints_fail():
    other_job = MLPJob(seed=99)
    theirs, their_states, their_batches = honest_run(8, job=other_job)
    mine, my_states, my_batches = honest_run(8)
    rng = random.Random(4)
    start, end = mine.commitments[0], mine.commitments[1]
    v = check_segment(step_with_threads(JOB, 1), start, end, their_states[0],
                      [my_batches[s] for s in range(1, K + 1)], openings(my_states[K], list(end.manifest), rng))
    assert v.outcome == "fail" and "uploaded state" in v.reason


def test_tolerance_names_the_tensor_chunk_and_distance():
    committer, states, batches = honest_run(8)
    end = committer.commitments[1]
    drifted = {k: v + np.float32(0.05) * np.abs(v).max() for k, v in states[K].items()}
    # a provider whose state drifted: its openings are consistent with a root that is not the replay's
    cheat = CheckpointCommitter(K)
    cheat.start(states[0])
    for s in range(1, K + 1):
        cheat.record(s, batches[s], drifted if s == K else states[0])
    v = segment(cheat, {0: states[0], K: drifted}, batches, 0, random.Random(5), mode="tolerance", tau=1e-3)
    assert v.outcome == "fail" and v.tensor is not None and v.distance > 1e-3
    assert end.step == K


def test_mode_and_tau_are_validated():
    committer, states, batches = honest_run(8)
    with pytest.raises(ValueError):
        segment(committer, states, batches, 0, random.Random(), mode="fuzzy")
    with pytest.raises(ValueError):
        segment(committer, states, batches, 0, random.Random(), mode="tolerance", tau=None)
