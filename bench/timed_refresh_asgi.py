"""The gateway as gateway/asgi.py serves it, with each trust computation (a miss or a refresh of the read
entry) and each maintenance sweep timed into the file named by TIMED_REFRESH_LOG: one line each, wall and
thread CPU milliseconds. With TIMED_REFRESH_EVERY_VERDICT=1 no verdict records are held (every computation
reads every verdict, as before gateway.trust_cache.HeldEvidence). Served by bench/refresh_under_load.py."""

from __future__ import annotations

import os
import time

from gpuproof.gateway import maintenance
from gpuproof.gateway.app import TrustFastPath, create_app

_log = open(os.environ["TIMED_REFRESH_LOG"], "a")  # noqa: SIM115 - open for the life of the server


def _timed(what: str, fn):  # noqa: ANN001, ANN202
    def timed(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            _log.write(f"{what} {time.time():.3f} {(time.perf_counter() - wall) * 1e3:.3f} "
                       f"{(time.thread_time() - cpu) * 1e3:.3f}\n")
            _log.flush()
    return timed


app = TrustFastPath.in_front_of(create_app())
app._compute = _timed("trust", app._compute)
maintenance.sweep = _timed("sweep", maintenance.sweep)  # (maintenance.run looks it up at each sweep)
if os.environ.get("TIMED_REFRESH_EVERY_VERDICT") == "1":
    app.state.trust_cache.held = None
