"""The examples in docs/api.md run as written against a live gateway (env vars set by the test)."""

from __future__ import annotations

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
