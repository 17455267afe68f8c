"""Verification of openings in a bounded pool of its own, fair per identity (issue 18).

A verdict can cost the gateway seconds of CPU (y = B.T x over all of B for a default-size H100 challenge),
while every other request (polls, commitments, reads) needs a worker thread for a few milliseconds. Judging
in the request's worker thread let one identity with many devices, or many fresh identities, hold every
worker thread and queue everyone else's verdicts (and polls) behind theirs. Here:

- verification runs in at most `slots` threads of its own (not the default worker threads);
- when a thread frees, the turn goes to the waiting identity with the fewest verifications running, and
  among equals round the identities (the one that just had a turn goes last), so one identity's 64 devices
  never stand in front of another identity's one; an identity alone may use every free thread;
- identities without a passed challenge yet ("new": free to make, issue 18) together hold at most
  `new_slots` of the threads, so a flood of fresh identities leaves established providers the rest.

Waiting holds no thread: a waiter is a future on the event loop. A verdict's time is the arrival of its
openings (gateway.state.arrived_at), so waiting here never makes an honest answer late.
"""

from __future__ import annotations

import asyncio
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from typing import Any, TypeVar

import anyio

T = TypeVar("T")


class VerifyPool:
    def __init__(self, slots: int, new_slots: int) -> None:
        if slots < 1 or not 1 <= new_slots <= slots:
            raise ValueError(f"verify pool: need 1 <= new_slots ({new_slots}) <= slots ({slots})")
        self.slots, self.new_slots = slots, new_slots
        self._limiter: anyio.CapacityLimiter | None = None  # made in the event loop, on first use
        self._running: Counter[str] = Counter()
        self._total = self._new_running = 0
        # identity -> its waiters (is it new, the future its turn resolves), in turn order
        self._waiting: OrderedDict[str, deque[tuple[bool, asyncio.Future[None]]]] = OrderedDict()
        self._once: dict[object, asyncio.Future[Any]] = {}  # verifications in flight by what they judge

    def busy(self) -> tuple[int, int]:
        """(verifications running, identities waiting)."""
        return self._total, len(self._waiting)

    async def run(self, identity: str, new: bool, work: Callable[[], T]) -> T:
        """`work()` in one of the pool's threads, when it is `identity`'s turn."""
        await self._acquire(identity, new)
        try:
            if self._limiter is None:
                self._limiter = anyio.CapacityLimiter(self.slots)
            return await anyio.to_thread.run_sync(work, limiter=self._limiter)
        finally:
            self._release(identity, new)

    async def once(self, key: object, identity: str, new: bool, work: Callable[[], T]) -> T:
        """`run`, shared by every caller with the same `key` while it is in flight: a retry of openings still
        under verification (the same challenge and digest) waits for that verdict instead of paying again.
        The verification goes on if a caller goes away (another may be waiting for it)."""
        task = self._once.get(key)
        if task is None:
            task = asyncio.ensure_future(self.run(identity, new, work))
            self._once[key] = task

            def done(finished: asyncio.Future[Any]) -> None:
                self._once.pop(key, None)
                if not finished.cancelled():
                    finished.exception()  # retrieved: no "never retrieved" warning when nobody waited

            task.add_done_callback(done)
        return await asyncio.shield(task)

    def judging(self, challenge_id: str) -> set[object]:
        """The digests of the openings of `challenge_id` being verified now (keys of `once` are
        (challenge id, digest)): one challenge is verified once at a time, whatever bodies are sent."""
        return {key[1] for key in self._once if isinstance(key, tuple) and key[0] == challenge_id}

    def _may_start(self, new: bool) -> bool:
        return self._total < self.slots and (not new or self._new_running < self.new_slots)

    def _start(self, identity: str, new: bool) -> None:
        self._running[identity] += 1
        self._total += 1
        self._new_running += new

    async def _acquire(self, identity: str, new: bool) -> None:
        if not self._waiting and self._may_start(new):  # nobody waits: no turn to take from anyone
            self._start(identity, new)
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (new, turn)
        self._waiting.setdefault(identity, deque()).append(entry)
        self._dispatch()  # a free thread that only a new identity's cap kept from others
        try:
            await turn
        except BaseException:
            if turn.done() and not turn.cancelled():  # granted, then cancelled before it ran: hand it on
                self._release(identity, new)
            else:
                queue = self._waiting.get(identity)
                if queue is not None and entry in queue:
                    queue.remove(entry)
                    if not queue:
                        del self._waiting[identity]
            raise

    def _release(self, identity: str, new: bool) -> None:
        self._running[identity] -= 1
        if self._running[identity] <= 0:
            del self._running[identity]
        self._total -= 1
        self._new_running -= new
        if identity in self._waiting:  # it just had its turn: the others waiting go first among equals
            self._waiting.move_to_end(identity)
        self._dispatch()

    def _dispatch(self) -> None:
        while self._total < self.slots:
            chosen = None
            for identity, queue in self._waiting.items():  # in turn order; fewest running wins
                while queue and queue[0][1].done():  # cancelled while its removal is pending
                    queue.popleft()
                if queue and self._may_start(queue[0][0]) and (
                        chosen is None or self._running[identity] < self._running[chosen]):
                    chosen = identity
            for identity in [i for i, q in self._waiting.items() if not q]:
                del self._waiting[identity]
            if chosen is None:
                return
            queue = self._waiting.pop(chosen)
            new, turn = queue.popleft()
            if queue:  # its next one waits at the back: the others' turn first
                self._waiting[chosen] = queue
            self._start(chosen, new)
            turn.set_result(None)
