"""The one-command benchmark suite runs and writes its results where it is told (never into the repo)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support.server import ROOT


def _tree() -> set:
    return {p for p in ROOT.rglob("*") if not {".git", ".venv", "__pycache__", ".hypothesis"} & set(p.parts)}


def test_run_all_quick_writes_table_json_and_plots(tmp_path):
    out = tmp_path / "results"
    before = _tree()
    run = subprocess.run([sys.executable, "bench/run_all.py", "--quick", "--out", str(out)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert run.returncode == 0, run.stderr[-3000:]
    data = json.loads((out / "benchmarks.json").read_text())
    names = {b["name"] for b in data["benchmarks"]}
    assert names == {"test_reference_round", "test_merkle_build", "test_verify_hopper_class_challenge",
                     "test_checkpoint_commitment", "test_gateway_score_read", "test_challenge_flow_under_load"}
    assert all(b["stats"]["median"] > 0 and b["stats"]["data"] for b in data["benchmarks"])
    for png in ("medians.png", "distributions.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| benchmark |" in (out / "summary.md").read_text() and "| benchmark |" in run.stdout
    assert _tree() == before  # nothing written into the repository
