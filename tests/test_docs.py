"""The examples in docs/api.md run as written against a live gateway (env vars set by the test); docs/gateway.md's
worked checkpoint example holds for the code."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from gpuproof.client import GatewayClient
from gpuproof.gateway import admin
from gpuproof.gateway.db import Database
from gpuproof.verifier import signatures

from tests.support.calibrate import scaled
from tests.support.server import Server

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "api.md").read_text()


@pytest.fixture
def live(tmp_path):
    url = f"sqlite:///{tmp_path / 'gw.db'}"
    server = Server(url, tmp_path / "gw").start()
    with GatewayClient(server.base, key=signatures.new_private_key()) as provider:
        provider.register("docs", [{"model": "cpu-reference", "vram_gib": 1}])
        env = dict(os.environ, GPUPROOF_GATEWAY=server.base, PROVIDER_ID=provider.provider_id,
                   GPUPROOF_API_KEY=admin.create_api_key(Database(url), "docs", ["jobs", "settle"]))
    yield env
    server.stop()


def test_python_example(live):
    code = re.findall(r"```python\n(.+?)\n```", DOC, flags=re.S)[0]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=live, cwd=ROOT,
                         timeout=scaled(60))
    assert out.returncode == 0, out.stderr
    assert "score 0.500" in out.stdout and "hold -" in out.stdout and "404 no job" in out.stdout


def test_curl_examples(live):
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    block = re.findall(r"```sh\n(.+?)\n```", DOC, flags=re.S)[1]
    out = subprocess.run(["bash", "-ec", block], capture_output=True, text=True, env=live, timeout=scaled(60))
    assert out.returncode == 0, out.stderr
    assert '"total":1' in out.stdout and '"lower_bound"' in out.stdout and '"renter_ref":"order-42"' in out.stdout


def checkpoint_example() -> tuple[dict[str, str], str]:
    """docs/gateway.md's worked checkpoint example: its table of values and the note as served."""
    doc = (ROOT / "docs" / "gateway.md").read_text()
    table = re.search(r"```text\n(seed .+?)\n```", doc, flags=re.S)
    note = re.search(r"```note\n(.+?\n)```", doc, flags=re.S)
    assert table and note, "docs/gateway.md lost its worked checkpoint example"
    return dict(re.split(r"\s{2,}", line, maxsplit=1) for line in table.group(1).splitlines()), note.group(1)


def test_the_worked_checkpoint_example_in_the_docs():
    from gpuproof.kernels import merkle
    from gpuproof.verifier import notes

    from tests.support.note_oracle import spec_verify

    ex, served = checkpoint_example()
    key = signatures.private_key_from_bytes(bytes.fromhex(ex["seed"]))
    public, root, size = signatures.public_key_bytes(key), bytes.fromhex(ex["root"]), int(ex["size"])
    assert public.hex() == ex["public key"]
    # the root is RFC 6962's 8-leaf test tree (its leaves: RFC 6962's test inputs)
    leaves = ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]
    assert merkle.MerkleTree(b"".join(merkle.leaf_hash(bytes.fromhex(x)) for x in leaves)).root == root
    key_input = ex["origin"].encode() + b"\n\x01" + public
    assert key_input.hex() == ex["key ID input"]
    assert hashlib.sha256(key_input).digest()[:4].hex() == ex["key ID"] == notes.key_id(ex["origin"], public).hex()
    assert notes.verifier_key(ex["origin"], public) == ex["verifier key"]
    text = notes.Checkpoint(ex["origin"], size, root).text()
    assert text.encode().hex() == ex["text (hex)"]
    assert signatures.sign(key, text.encode()).hex() == ex["signature"]
    assert notes.Checkpoint(ex["origin"], size, root).sign(key) == served
    line = base64.b64encode(bytes.fromhex(ex["key ID"] + ex["signature"])).decode()
    assert served == f"{text}\n\u2014 {ex['origin']} {line}\n"
    assert spec_verify(served, ex["origin"], public) == (ex["origin"], size, root)
def test_request_signature_worked_example():
    """docs/gateway.md's worked example of a version 2 request signature is what the code makes."""
    doc = (ROOT / "docs" / "gateway.md").read_text()
    block = re.search(r"\*\*Worked example\*\*.+?```text\n(.+?)\n```", doc, flags=re.S)
    assert block, "docs/gateway.md lost its worked example"
    fields: dict[str, str] = {}
    name = ""
    for line in block.group(1).splitlines():
        head, value = line[:20].strip(), line[20:].strip()
        name = head or name
        fields[name] = fields.get(name, "") + value if not head else value
    key = signatures.private_key_from_bytes(bytes.fromhex(fields["private key (seed)"]))
    public = signatures.public_key_bytes(key)
    assert public.hex() == fields["public key"]
    assert signatures.provider_id(public) == fields["provider id"]
    body = fields["body"].encode()
    assert hashlib.sha256(body).hexdigest() == fields["body sha256"]
    message = signatures.request_message(fields["method"], fields["target"], fields["audience"],
                                         int(fields["timestamp"]), fields["nonce"], body)
    assert message.hex() == fields["message (hex)"]
    assert signatures.sign(key, message).hex() == fields["signature"]
    signatures.verify(public, message, bytes.fromhex(fields["signature"]))
