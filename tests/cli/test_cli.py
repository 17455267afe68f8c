"""The `gpuproof challenge` commands as a user runs them: real subprocesses, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx
import pytest
from gpuproof.kernels import merkle
from gpuproof.kernels.reference import row_root

from tests.conftest import load_vectors
from tests.support.calibrate import honest_cpu_shape, scaled

V1 = load_vectors("spec_v1.json")["challenges"][0]
V2_VECTORS = load_vectors("spec_v2.json")["challenges"]
SEED = V1["seed"]
SIZES = ["--m", "256", "--n", "256", "--k", "64", "--rounds", "2", "--spec", "1"]
# `challenge local` times its honest CPU run like a gateway would: a shape whose slow bound leaves 1 s
# (scaled to this machine, tests/support/calibrate.py) beyond the overhead allowance
HONEST = ",".join(str(v) for v in honest_cpu_shape(1))


def gpuproof(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gpuproof", *args], capture_output=True, text=True,
                          timeout=scaled(120), stdin=subprocess.DEVNULL)


def test_run_json_prints_only_the_document_with_the_vector_roots():
    out = gpuproof("challenge", "run", "--seed", SEED, *SIZES, "--backend", "cpu", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["spec"] == "gpuproof/1" and doc["backend"] == "cpu"
    assert doc["roots"] == V1["roots"]
    assert doc["seconds"] >= 0


@pytest.mark.parametrize("vector", V2_VECTORS, ids=lambda v: v["desc"])
def test_run_reproduces_the_v2_vectors_and_v2_is_the_default(vector):
    sizes = ["--m", str(vector["m"]), "--n", str(vector["n"]), "--k", str(vector["k"]),
             "--rounds", str(vector["rounds"])]
    out = gpuproof("challenge", "run", "--seed", vector["seed"], *sizes, "--backend", "cpu", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["spec"] == "gpuproof/2" and doc["roots"] == vector["roots"]
    if vector["desc"] == "W1":
        explicit = gpuproof("challenge", "run", "--spec", "2", "--seed", vector["seed"], *sizes, "--backend", "cpu",
                            "--json")
        assert json.loads(explicit.stdout)["roots"] == vector["roots"]


def test_local_plays_a_v2_h200_challenge_on_the_cpu_at_a_small_size(tmp_path):
    path = tmp_path / "t.json"
    out = gpuproof("challenge", "local", "--device-model", "h200", "--backend", "cpu", "--transcript", str(path))
    assert "small shape 256,256,1024,2" in out.stderr, out.stderr
    doc = json.loads(path.read_text())
    assert doc["spec"] == "gpuproof/2" and doc["challenge"]["profile"] == "h200"
    assert doc["verdict"]["correctness"] == "pass"
    assert out.returncode == (0 if doc["verdict"]["outcome"] == "pass" else 1)
    check = gpuproof("verify-transcript", str(path), "--json")
    assert json.loads(check.stdout)["matches_record"] is True



def test_local_plays_the_v2_memory_phase_after_the_compute_phase():
    """Issue 17: `challenge local --device-model h200` plays spec v2's memory phase too: the table over the
    rounds, the walk, opened lanes checked against the committed roots; a v1 challenge has no memory phase."""
    out = gpuproof("challenge", "local", "--device-model", "h200", "--backend", "cpu", "--json")
    verdict = json.loads(out.stdout)
    memory = verdict["memory"]
    assert memory["failure"] is None, memory  # every opened lane re-walked to its committed state
    assert memory["table_bytes"] == 2 * 256 * 256 * 4  # both rounds of the small shape are the table
    assert memory["walk_class"] in ("consistent", "faster-than-claimed", "slower-than-claimed", "timeout")
    assert memory["capacity"] in ("holds-table", "not-shown") and memory["reasons"]
    assert out.returncode == (0 if verdict["outcome"] == "pass" else 1)
    v1 = gpuproof("challenge", "local", "--device-model", "h200", "--backend", "cpu", "--spec", "1", "--json")
    assert "memory" not in json.loads(v1.stdout)

def test_run_plain_prints_one_root_per_round():
    out = gpuproof("challenge", "run", "--seed", SEED, *SIZES, "--backend", "cpu")
    assert out.returncode == 0
    assert [line.split("\t")[1] for line in out.stdout.splitlines()] == V1["roots"]


def test_open_json_verifies_against_the_vector_root():
    out = gpuproof("challenge", "open", "--seed", SEED, *SIZES, "--round", "1", "--row", "200", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    import numpy as np

    values = np.array(doc["values"], dtype=np.int32)
    path = [bytes.fromhex(h) for h in doc["path"]]
    merkle.verify_inclusion(200, 256, row_root(values), path, bytes.fromhex(V1["roots"][1]))


@pytest.mark.parametrize("args, fragment", [
    (["--seed", "00", *SIZES], "--seed"),
    (["--seed", "g" * 64, *SIZES], "--seed"),
    (["--seed", SEED, "--m", "256", "--n", "300", "--k", "64", "--rounds", "2"], "--n"),
    (["--seed", SEED, "--m", "0", "--n", "256", "--k", "64", "--rounds", "2"], "--m"),
    (["--seed", SEED, "--m", "4", "--n", "256", "--k", "65", "--rounds", "2"], "--k"),
    (["--seed", SEED, "--m", "4", "--n", "256", "--k", "64", "--rounds", "0"], "--rounds"),
    (["--seed", SEED, "--m", "x", "--n", "256", "--k", "64", "--rounds", "1"], "--m"),
    (["--seed", SEED, *SIZES, "--backend", "tpu"], "--backend"),
    (["--seed", SEED, *SIZES, "--device", "-1"], "--device"),
    (["--seed", SEED, "--m", "256"], "--n"),
    (["--seed", SEED, "--m", "4", "--n", "256", "--k", "131072", "--rounds", "1"], "--k"),
    (["--seed", SEED, "--m", "4", "--n", "256", "--k", "64", "--rounds", "1", "--spec", "3"], "--spec"),
])
def test_bad_input_exits_2_with_one_line_naming_the_parameter(args, fragment):
    out = gpuproof("challenge", "run", *args)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""


@pytest.mark.parametrize("extra, fragment", [
    (["--round", "2", "--row", "0"], "--round"),
    (["--round", "0", "--row", "256"], "--row"),
])
def test_open_out_of_range_exits_2(extra, fragment):
    out = gpuproof("challenge", "open", "--seed", SEED, *SIZES, *extra)
    assert out.returncode == 2 and fragment in out.stderr and "Traceback" not in out.stderr


def test_cuda_without_gpu_exits_2_with_reason():
    from gpuproof.kernels.backend import cuda_status

    if cuda_status()[0]:
        pytest.skip("a GPU is present here")
    out = gpuproof("challenge", "run", "--seed", SEED, *SIZES, "--backend", "cuda")
    assert out.returncode == 2
    assert out.stderr.strip().startswith("gpuproof: error: --backend cuda:")


def test_local_protocol_writes_a_transcript_that_verify_transcript_accepts(tmp_path):
    path = tmp_path / "t.json"
    out = gpuproof("challenge", "local", "--shape", HONEST, "--backend", "cpu", "--transcript", str(path))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("verdict: PASS")
    check = gpuproof("verify-transcript", str(path), "--json")
    assert check.returncode == 0, check.stderr
    doc = json.loads(check.stdout)
    assert doc["matches_record"] is True and doc["verdict"]["outcome"] == "pass"


def test_verify_transcript_names_the_difference_and_exits_1(tmp_path):
    path = tmp_path / "t.json"
    assert gpuproof("challenge", "local", "--shape", HONEST, "--backend", "cpu",
                    "--transcript", str(path)).returncode == 0
    doc = json.loads(path.read_text())
    doc["verdict"]["timing"] = "slower-than-claimed"
    path.write_text(json.dumps(doc))
    check = gpuproof("verify-transcript", str(path))
    assert check.returncode == 1
    assert "verdict.timing: recorded 'slower-than-claimed', recomputed 'consistent'" in check.stdout


@pytest.mark.parametrize("content, fragment", [
    (None, "is no file here and not a challenge id"), ("not json", "is not JSON"), ('{"version": 1}', "version"),
    ('{"version": "gpuproof.transcript/1"}', "missing field 'challenge'"),
])
def test_verify_transcript_bad_files_exit_2_with_one_line(tmp_path, content, fragment):
    path = tmp_path / "bad.json"
    if content is not None:
        path.write_text(content)
    out = gpuproof("verify-transcript", str(path))
    assert out.returncode == 2 and fragment in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


@pytest.mark.parametrize("source, fragments", [
    ("deadbeef", ["'deadbeef' is no file here and not a challenge id", "32 lowercase hex characters"]),
    ("ab" * 16, [f"{'ab' * 16} is a challenge id", "needs a gateway: pass --gateway URL"]),
])
def test_verify_transcript_of_a_bad_id_or_without_a_gateway_says_so(tmp_path, source, fragments):
    env = {k: v for k, v in os.environ.items() if k != "GPUPROOF_GATEWAY"} | {"GPUPROOF_CONFIG_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "gpuproof", "verify-transcript", source], capture_output=True,
                         text=True, timeout=scaled(60), env=env, cwd=tmp_path, stdin=subprocess.DEVNULL)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert all(f in out.stderr for f in fragments) and "cannot read" not in out.stderr, out.stderr


def test_local_bad_shape_exits_2():
    out = gpuproof("challenge", "local", "--shape", "1,2")
    assert out.returncode == 2 and "--shape" in out.stderr


def test_gateway_serve_says_where_it_listens_where_its_data_is_and_where_the_docs_are(tmp_path):
    from tests.support.server import free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("GPUPROOF_DATABASE_URL", "GPUPROOF_DATA_DIR")}
    proc = subprocess.Popen([sys.executable, "-m", "gpuproof", "gateway", "serve", "--port", str(port),
                             "--data-dir", str(tmp_path / "gw")], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, env=env, stdin=subprocess.DEVNULL)
    try:
        lines = [proc.stdout.readline() for _ in range(5)]  # printed before uvicorn starts, flushed
        text = "".join(lines)
        assert f"listening on http://127.0.0.1:{port}/" in lines[0], text
        assert f"data dir  {tmp_path / 'gw'}" in text and f"sqlite:///{tmp_path / 'gw' / 'gateway.db'}" in text
        docs = f"http://127.0.0.1:{port}/docs"
        assert f"API docs  {docs}" in text
        deadline = time.monotonic() + scaled(30)
        while True:
            try:
                page = httpx.get(docs)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the gateway did not come up"
                time.sleep(0.2)
        assert page.status_code == 200 and "/docs-assets/swagger-ui-bundle.js" in page.text
    finally:
        proc.terminate()
        proc.wait(timeout=scaled(30))


def test_gateway_serve_masks_the_database_password():
    from gpuproof.cli.admin import serve_banner
    from gpuproof.gateway.settings import Settings

    settings = Settings(data_dir="/srv/gp", database_url="postgresql+psycopg://gp:s3cret@db.example:5432/gp")
    text = "\n".join(serve_banner("0.0.0.0", 8080, settings))
    assert "s3cret" not in text and "postgresql+psycopg://gp:***@db.example:5432/gp" in text
    assert "http://127.0.0.1:8080/" in text and "every interface" in text
    assert "http://[::1]:9000/docs" in "\n".join(serve_banner("::1", 9000, settings))


def test_api_key_scope_help_lists_every_scope_the_gateway_knows():  # `replay` was missing from the help
    from gpuproof.gateway import API_KEY_SCOPES

    out = gpuproof("gateway", "api-key", "create", "--help")
    text = " ".join(out.stdout.replace("│", " ").split())
    assert out.returncode == 0 and set(API_KEY_SCOPES) == {"jobs", "settle", "replay"}
    assert all(f"{scope} ({what})" in text for scope, what in API_KEY_SCOPES.items()), text
