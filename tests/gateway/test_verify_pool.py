"""gateway/verify_pool.py: identities take turns, the fewest running first; new identities capped together."""

from __future__ import annotations

import threading
import time
from collections import Counter

import anyio
import pytest
from gpuproof.gateway.verify_pool import VerifyPool


def _run(pool: VerifyPool, jobs: list[tuple[str, bool]]) -> list[str]:
    """Start every job at once (in list order) on one pool; the order in which their work ran."""
    order: list[str] = []
    gate = threading.Event()

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for name, new in jobs:
                def work(name: str = name) -> None:
                    gate.wait(5)
                    order.append(name)
                tg.start_soon(pool.run, name.split(".")[0], new, work)
                await anyio.sleep(0)
            await anyio.sleep(0.05)
            gate.set()

    anyio.run(main)
    return order


def test_identities_take_turns_one_at_a_time():
    pool = VerifyPool(slots=1, new_slots=1)
    order = _run(pool, [("a.1", True), ("a.2", True), ("a.3", True), ("b.1", True), ("c.1", True), ("b.2", True)])
    assert order == ["a.1", "b.1", "c.1", "a.2", "b.2", "a.3"]
    assert pool.busy() == (0, 0)


def _most_at_once(pool: VerifyPool, jobs: list[tuple[str, bool]]) -> dict[str, int]:
    """Run the jobs at once (each ~20 ms); the most that ran at the same time, per identity and in all."""
    running: Counter[str] = Counter()
    most: Counter[str] = Counter()
    lock = threading.Lock()

    async def one(name: str, new: bool) -> None:
        def work() -> None:
            with lock:
                running[name] += 1
                running["all"] += 1
                for k in (name, "all"):
                    most[k] = max(most[k], running[k])
            time.sleep(0.02)
            with lock:
                running[name] -= 1
                running["all"] -= 1
        await pool.run(name, new, work)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for name, new in jobs:
                tg.start_soon(one, name, new)

    anyio.run(main)
    assert pool.busy() == (0, 0)
    return dict(most)


def test_an_identity_alone_uses_every_thread_and_shares_them_when_others_wait():
    assert _most_at_once(VerifyPool(slots=3, new_slots=1), [("old", False)] * 6)["all"] == 3
    # new identities: one thread between them, however many of them and however many threads
    most = _most_at_once(VerifyPool(slots=3, new_slots=1), [("fresh", True)] * 4 + [("fresh2", True)] * 2)
    assert most["all"] == 1


def test_new_identities_hold_at_most_their_share():
    pool = VerifyPool(slots=2, new_slots=1)
    running, most = [], [0, 0]  # (new running now, most seen)
    lock = threading.Lock()

    async def main() -> None:
        async def one(name: str, new: bool) -> None:
            def work() -> None:
                with lock:
                    running.append(new)
                    most[0] = max(most[0], sum(running))
                time.sleep(0.02)
                with lock:
                    running.remove(new)
            await pool.run(name, new, work)

        async with anyio.create_task_group() as tg:
            for i in range(6):
                tg.start_soon(one, f"sybil{i}", True)
            tg.start_soon(one, "old", False)

    anyio.run(main)
    assert most[0] == 1  # never two new identities verified at once, though two slots were there
    assert pool.busy() == (0, 0)


def test_a_cancelled_waiter_leaves_no_trace():
    pool = VerifyPool(slots=1, new_slots=1)
    gate = threading.Event()

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(pool.run, "a", False, lambda: gate.wait(5))
            await anyio.sleep(0.01)
            with anyio.move_on_after(0.01):
                await pool.run("b", False, lambda: None)  # waits its turn, then gives up
            assert pool.busy() == (1, 0)
            gate.set()
        assert await pool.run("b", False, lambda: 7) == 7

    anyio.run(main)
    assert pool.busy() == (0, 0)


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError):
        VerifyPool(slots=1, new_slots=2)


def test_the_same_verification_in_flight_is_paid_once():
    pool = VerifyPool(slots=2, new_slots=1)
    calls, gate = [], threading.Event()

    def work() -> str:
        calls.append(1)
        gate.wait(5)
        return "verdict"

    async def main() -> list[str]:
        answers: list[str] = []

        async def ask() -> None:
            answers.append(await pool.once(("c", "digest"), "a", False, work))

        async with anyio.create_task_group() as tg:
            for _ in range(3):  # the openings and two retries while it is judged
                tg.start_soon(ask)
            await anyio.sleep(0.05)
            gate.set()
        return answers

    assert anyio.run(main) == ["verdict"] * 3 and len(calls) == 1
    assert pool.busy() == (0, 0)
