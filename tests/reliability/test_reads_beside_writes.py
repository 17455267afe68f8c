"""Issue 18, "no request is cheap to send and dear to serve": the public reads run on threads of their own
(gateway/sessions.py `in_read_threads`), so writes queued for the database's write lock never make a read
wait. Before, every blocking handler shared the gateway's few worker threads (3): under a flood of writes
those all waited for SQLite's write lock, a transaction each, and a log head or a provider page waited
behind all of them (docs/performance.md, "Public reads at scale": p99 up to 320 ms). Counted, not timed:
the reads must all answer while the writes still wait for the lock this test holds."""

from __future__ import annotations

import sqlite3
import threading
import time

import httpx
from gpuproof.client import GatewayClient, GatewayError
from gpuproof.verifier import signatures

from tests.support.calibrate import scaled
from tests.support.server import Server

READS = ("/v1/log/head", "/v1/log/checkpoint", "/v1/providers?limit=5", "/v1/log/inclusion?index=0&size=1",
         "/v1/log/consistency?old=1&new=1", "/", "/log")


def test_reads_answer_while_every_worker_thread_waits_for_the_write_lock(tmp_path):
    path = tmp_path / "gw.db"
    server = Server(f"sqlite:///{path}", tmp_path / "gw", GPUPROOF_WORKER_THREADS="1").start()
    writes: list[str] = []
    try:
        with GatewayClient(server.base, key=signatures.new_private_key()) as first:
            first.register("first", [{"model": "cpu-reference", "vram_gib": 8}])  # the log has an entry
        holder = sqlite3.connect(path, timeout=1, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # the write lock, as a long write transaction holds it

        def register(n: int) -> None:
            try:
                with GatewayClient(server.base, key=signatures.new_private_key(), timeout=scaled(120)) as client:
                    client.register(f"writer {n}", [{"model": "cpu-reference", "vram_gib": 8}])
                writes.append("registered")
            except GatewayError as exc:
                writes.append(f"{exc.status}")

        writers = [threading.Thread(target=register, args=(n,)) for n in range(3)]
        for w in writers:  # the one worker thread waits for the lock; the others queue for it
            w.start()
        time.sleep(scaled(0.5))  # their requests reach the gateway (on the old code the reads then timed out)
        try:
            with httpx.Client(base_url=server.base, timeout=scaled(15)) as reader:
                for path_ in READS:
                    try:
                        r = reader.get(path_)
                    except httpx.TimeoutException as exc:
                        raise AssertionError(f"{path_} timed out") from exc
                    assert r.status_code == 200, (path_, r.status_code, r.text[:300])
            assert writes == [], "a write went through while the test held the write lock"
        finally:
            holder.execute("ROLLBACK")
            holder.close()
            for w in writers:
                w.join(timeout=scaled(120))
        assert writes == ["registered"] * 3, writes
    finally:
        server.stop()
