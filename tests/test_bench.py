"""The one-command benchmark suite runs and writes its results where it is told (never into the repo)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

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


@pytest.mark.nvcc
def test_sass_mix_counts_the_leaf_loop_by_pipe(tmp_path):
    """bench/sass_mix.py finds leaf_hash_1k's loop in the SASS: one compression's worth, no local memory."""
    sys.path.insert(0, str(ROOT / "bench"))
    import sass_mix

    if sass_mix.missing_tools():
        pytest.skip(f"{sass_mix.missing_tools()} not found (the dev extra installs cuobjdump and nvdisasm)")
    assert sass_mix.main(["--variants", "default", "leaf-alu", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "sass_mix.json").read_text())["rows"]
    for row in rows.values():
        # a SHA-256 compression is 64 rounds of >= 6 rotations and 4 logic ops, 48 schedule words of >= 6
        assert row["alu"] + row["fma"] >= 64 * 10 + 48 * 6
        assert row["local_memory_ops"] == 0  # no spills anywhere in the kernel
    # the FMA variant moves work off the ALU pipe, which is what bounds SHA-256
    assert rows["default"]["alu"] < rows["leaf-alu"]["alu"] and rows["default"]["fma"] > rows["leaf-alu"]["fma"]
