"""A second-language client (issue 19): tests/node/client.mjs, Node.js 20 with its built-in modules only,
written from docs/gateway.md and docs/protocol.md, against a real gateway process. It registers (signing
the bytes it sends, `16` not `16.0`, a non-ASCII name), is refused for another gateway's audience, answers
a small challenge and gets `pass`, and checks its log entries with inclusion proofs under the log's signed
C2SP checkpoint, verified under the log key it pinned at first contact (an altered checkpoint, or one
checked under another key, is refused)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.calibrate import scaled
from tests.support.server import Server

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="`node` (Node.js 20 or later) is not installed: the "
                                "second-language client cannot run")


def node(*args: str) -> dict:
    assert NODE is not None
    out = subprocess.run([NODE, str(HERE / "client.mjs"), *args], capture_output=True, text=True, cwd=ROOT,
                         timeout=scaled(120))
    assert out.stdout, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert out.returncode == 0 and result["ok"], result
    return result


def test_node_reproduces_the_docs_signature_example():
    assert node("example", str(ROOT / "docs" / "gateway.md"))["checks"]["signature"]


def test_node_reproduces_the_spec_vectors():
    checks = node("vectors", str(ROOT / "tests/vectors/spec_v1.json"), str(ROOT / "tests/vectors/spec_v2.json"))
    assert len(checks["checks"]) == 5


def test_node_client_registers_passes_a_challenge_and_verifies_the_log(tmp_path):
    server = Server(f"sqlite:///{tmp_path / 'gw.db'}", tmp_path / "gw").start()
    try:
        result = node("run", server.base)
    finally:
        server.stop()
    assert result["verdict"] == "pass" and result["spec"] == "gpuproof/2", result
    checks = result["checks"]
    assert checks["other_audience_refused"] and checks["verdict_included"]
    assert checks["log_key_is_the_gateways"] and checks["checkpoint_verifies"] and checks["altered_checkpoint_refused"]
