"""Uploaded checkpoint states behind one interface (gateway/blobs.py): the local directory and an S3 bucket
on a real S3-compatible server (moto's, over loopback HTTP; tests/support/s3.py) behave alike: content
addressing, streamed transfers, the quota, deletion after the verdict, and the training flow through the
gateway on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time

import pytest
from fastapi.testclient import TestClient
from gpuproof.agent.training import replay_job
from gpuproof.client import GatewayError, validator_headers
from gpuproof.gateway import blobs, maintenance
from gpuproof.gateway.app import create_app
from gpuproof.gateway.settings import Settings
from gpuproof.kernels.errors import InvalidParameter

from tests.gateway.conftest import Gateway
from tests.gateway.test_training import World
from tests.support.calibrate import scaled
from tests.support.server import ROOT


def _spool(store: blobs.BlobStore, data: bytes) -> tuple:
    store.incoming.mkdir(parents=True, exist_ok=True)
    path = store.incoming / f"{hashlib.sha256(data).hexdigest()[:12]}.part"
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    """An empty store of each kind, with no quota."""
    if request.param == "local":
        return blobs.LocalBlobStore.in_data_dir(tmp_path)
    bucket = request.getfixturevalue("s3")
    return blobs.open_store(Settings(data_dir=tmp_path, **bucket.settings(), blob_quota_bytes=0,
                                     blob_quota_objects=0))


def test_blobs_are_stored_by_content_read_back_and_deleted(store):
    data = bytes(range(256)) * 4099  # ~1 MiB, not a multiple of the read piece
    src, digest = _spool(store, data)
    assert store.put_file(src, digest) is True
    assert store.has(digest) and store.usage() == blobs.Usage(len(data), 1)
    again, same = _spool(store, data)
    assert same == digest and store.put_file(again, digest) is False  # stored once
    assert store.usage().objects == 1
    blob = store.open(digest)
    assert blob is not None and blob.size == len(data)
    pieces = list(blob.chunks())
    assert b"".join(pieces) == data and max(map(len, pieces)) <= blobs.READ_BYTES
    assert [b.digest for b in store.list()] == [digest]
    store.delete(digest)
    store.delete(digest)  # deleting what is gone is no error
    assert not store.has(digest) and store.open(digest) is None and store.usage() == blobs.Usage(0, 0)
    with pytest.raises(ValueError, match="not a SHA-256"):
        store.open("../../etc/passwd")


def test_the_quota_counts_bytes_and_objects_and_content_already_stored_is_free(store):
    store.quota_bytes, store.quota_objects = 3000, 2
    a, da = _spool(store, b"a" * 1000)
    b, db = _spool(store, b"b" * 1500)
    assert store.put_file(a, da) and store.put_file(b, db)
    c, dc = _spool(store, b"c" * 600)
    with pytest.raises(blobs.QuotaExceeded, match="GPUPROOF_BLOB_QUOTA_OBJECTS"):
        store.put_file(c, dc)
    store.quota_objects = 10
    with pytest.raises(blobs.QuotaExceeded, match="holds 2500 bytes; 600 more would pass its quota of 3000"):
        store.put_file(c, dc)
    again, _ = _spool(store, b"a" * 1000)
    assert store.put_file(again, da) is False  # already stored: costs nothing, refused nothing
    store.delete(db)
    assert store.put_file(c, dc) is True
    assert store.usage() == blobs.Usage(1600, 2)


def test_unnamed_blobs_are_found_only_once_they_are_old():
    listed = [blobs.StoredBlob("a" * 64, 1, 50.0), blobs.StoredBlob("b" * 64, 1, 50.0),
              blobs.StoredBlob("c" * 64, 1, 3690.0)]
    assert blobs.stale_unnamed(iter(listed), {"b" * 64}, now=3700.0, min_age_s=3600.0) == ["a" * 64]


# Uploads and downloads hold at most a part (8 MiB) at a time, two in flight: measured in a child process
# (the S3 server runs in this one) by tracemalloc, for a 48 MiB state.
_TRANSFER = """
import hashlib, json, os, sys, tracemalloc
from pathlib import Path
from gpuproof.gateway import blobs
store = blobs.S3BlobStore(sys.argv[1], Path(sys.argv[2]), "t/", sys.argv[3], "us-east-1")
src = Path(sys.argv[2]) / "big.part"
digest = hashlib.sha256(src.read_bytes()).hexdigest()
tracemalloc.start()
store.put_file(src, digest)
up = tracemalloc.get_traced_memory()[1]
tracemalloc.reset_peak()
blob, h = store.open(digest), hashlib.sha256()
for piece in blob.chunks():
    h.update(piece)
down = tracemalloc.get_traced_memory()[1]
print(json.dumps({"up": up, "down": down, "same": h.hexdigest() == digest, "size": blob.size}))
"""


def test_s3_transfers_stream_in_parts_without_the_whole_body_in_memory(s3, tmp_path):
    size = 48 * 1024 * 1024
    with open(tmp_path / "big.part", "wb") as fh:
        for i in range(size // (1 << 20)):
            fh.write(hashlib.sha256(str(i).encode()).digest() * (1 << 15))
    out = subprocess.run([sys.executable, "-c", _TRANSFER, s3.bucket, str(tmp_path), s3.endpoint], cwd=ROOT,
                         capture_output=True, text=True, timeout=scaled(120), env=None)
    assert out.returncode == 0, out.stderr[-3000:]
    measured = json.loads(out.stdout)
    assert measured["same"] and measured["size"] == size
    print(f"48 MiB through S3: peak traced memory {measured['up'] / 2**20:.1f} MiB up, "
          f"{measured['down'] / 2**20:.1f} MiB down")
    assert measured["up"] < 24 * 2**20 and measured["down"] < 8 * 2**20, measured
    key = f"t/{hashlib.sha256((tmp_path / 'big.part').read_bytes()).hexdigest()}"
    assert s3.keys() == [key]
    etag = s3.client.head_object(Bucket=s3.bucket, Key=key)["ETag"]
    assert etag.strip('"').endswith("-6"), etag  # a multipart upload of 6 parts of 8 MiB


def test_selecting_s3_without_a_bucket_or_without_boto3_says_what_to_do(tmp_path, monkeypatch):
    with pytest.raises(InvalidParameter, match="GPUPROOF_S3_BUCKET"):
        blobs.open_store(Settings(data_dir=tmp_path, blob_store="s3"))
    monkeypatch.setitem(sys.modules, "boto3", None)  # import boto3 raises ImportError
    with pytest.raises(InvalidParameter, match=r"pip install 'gpuproof\[s3\]'"):
        blobs.open_store(Settings(data_dir=tmp_path, blob_store="s3", s3_bucket="b"))


@pytest.fixture
def s3_gateway(database_url, tmp_path, s3):
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url, verify_test_shape="16,256,64,3",
                        challenge_interval_s=3600, provider_rate_per_s=1000, ip_rate_per_s=10000,
                        maintenance_interval_s=0, **s3.settings())
    app = create_app(settings)
    with TestClient(app) as client:
        yield Gateway(client, settings, app)


def test_an_honest_training_run_with_s3_uploads_passes_and_leaves_the_bucket_empty(s3_gateway, s3, tmp_path):
    world = World(s3_gateway, tmp_path)
    provider, jid, before, after = world.run()
    assert before["state"] == "closed" and all(a["state"] == "ready" for a in before["audits"]), before
    assert len(after["audits"]) == 2 and all(a["outcome"] == "pass" for a in after["audits"]), after
    assert s3.keys() == []  # each upload deleted once its segment was judged
    assert not (s3_gateway.settings.data_dir / "uploads").exists() or not any(
        p.is_file() for p in (s3_gateway.settings.data_dir / "uploads").rglob("*"))  # nothing left on disk


def test_s3_uploads_are_content_addressed_streamed_to_validators_and_held_to_a_quota(s3_gateway, s3, tmp_path):
    from gpuproof.agent.checkpointing import CheckpointCommitter
    from gpuproof.agent.training import TrainingReporter
    from gpuproof.verifier.workload import MLPJob

    s3_gateway.app.state.gp.blobs.quota_objects = 1
    world = World(s3_gateway, tmp_path)
    provider = world.provider()
    jid = world.job(provider)
    reporter = TrainingReporter(provider, jid)
    committer = CheckpointCommitter(4, store=tmp_path / "s", on_commit=reporter.send)
    job = MLPJob(seed=7, hidden=32)
    state = job.init_state()
    committer.start(state)
    for step in range(1, 13):
        state = job.step(state, job.batch_indices(step))
        committer.record(step, job.batch_indices(step), state)
    first, second = reporter.close()["audits"][:2]
    reporter.answer(committer, [first])  # upload and openings: ready for replay
    data = committer.state_bytes(first["start_step"])
    digest = hashlib.sha256(data).hexdigest()
    assert s3.keys() == [f"gpuproof/uploads/{digest}"]  # the object's key is the content's SHA-256
    assert s3.client.get_object(Bucket=s3.bucket, Key=s3.keys()[0])["Body"].read() == data
    with pytest.raises(GatewayError) as info:  # the quota (1 object) is full
        provider.upload_state(second["audit_id"], committer.state_bytes(second["start_step"]))
    assert info.value.status == 507 and "GPUPROOF_BLOB_QUOTA_OBJECTS" in info.value.detail
    assert world.market.training(jid)["audits"][1]["uploaded"] is False and len(s3.keys()) == 1
    # the validator's download streams from the bucket, with its length and digest
    path = f"/v1/audits/{first['audit_id']}/state"  # read by a validator the job names (issue 18)
    answer = s3_gateway.client.get(path, headers={"Authorization": f"Bearer {world.validator.api_key}",
                                                  **validator_headers(world.validator_key, "GET", path,
                                                                     audience=s3_gateway.audience)})
    assert answer.status_code == 200 and answer.content == data
    assert answer.headers["content-length"] == str(len(data)) and answer.headers["x-content-sha256"] == digest
    replay_job(world.validator, jid, world.validator_key)  # judges the first audit: its blob is deleted
    assert s3.keys() == []
    reporter.answer(committer, [second])  # now it fits
    assert len(s3.keys()) == 1
    audits = replay_job(world.validator, jid, world.validator_key)
    assert [a["outcome"] for a in audits][:2] == ["pass", "pass"], audits
    assert s3.keys() == []


def test_a_blob_left_unnamed_is_swept_after_an_hour(s3_gateway, s3, tmp_path):
    store = s3_gateway.app.state.gp.blobs
    src, digest = _spool(store, b"left by a crash between storing and naming")
    store.put_file(src, digest)
    state = s3_gateway.app.state.gp
    assert maintenance.sweep(state, time.time()).unnamed_blobs == 0  # young: may be named any moment
    assert maintenance.sweep(state, time.time() + maintenance.STALE_UPLOAD_S + 60).unnamed_blobs == 1
    assert s3.keys() == []
