"""GPUPROOF_PROFILES_FILE (issue 16): an operator's measured profiles, added to the packaged ones, decide how a
device claiming one is challenged and judged; a malformed file stops the gateway with one clear line."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from gpuproof.cli import main
from gpuproof.gateway.app import create_app
from gpuproof.gateway.settings import Settings
from gpuproof.kernels.errors import InvalidParameter

from tests.gateway.test_paid_hardware import Provider

MEASURED = """
[profiles.site-cpu]
name = "our CPU nodes"
aliases = ["site cpu"]
int8_tops = 2e-4      # measured on our nodes
memory_gib = 4
bandwidth_gbs = 10
eff_low = 0.9
eff_high = 1.8
measured = true
arch = "cpu"
"""


def test_a_device_claiming_a_profile_from_the_file_is_registered_and_challenged_under_it(database_url, tmp_path):
    path = tmp_path / "profiles.toml"
    path.write_text(MEASURED)
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url, verify_test_shape="16,256,64,3",
                        challenge_interval_s=3600, provider_rate_per_s=1000, ip_rate_per_s=10000,
                        maintenance_interval_s=0, profiles_file=path)
    app = create_app(settings)
    with TestClient(app) as client:
        class Gw:
            pass
        gw = Gw()
        gw.client, gw.app = client, app  # type: ignore[attr-defined]
        box = Provider(gw, ["site cpu", "cpu-reference"])
        devices = client.get(f"/v1/providers/{box.id}").json()["devices"]
        assert [d["claimed_profile"] for d in devices] == ["site-cpu", "cpu-reference"]
        verdict = box.answer(0)  # issued and judged under the file's profile, not cpu-reference's
        profile = app.state.gp.verifier.profiles["site-cpu"]
        assert verdict["expected_s"] == pytest.approx(2.0 * 16 * 256 * 64 * 3 / profile.rate_typical)
        assert verdict["outcome"] == "pass", verdict["reasons"]
        # the pass verifies the file's class in the listings too (they read the gateway's profiles, not
        # only the packaged ones)
        devices = client.get(f"/v1/providers/{box.id}").json()["devices"]
        assert devices[0]["verified_class"] == "site-cpu", devices
        listed = client.get("/v1/providers?model=site-cpu").json()["items"]
        assert [p["id"] for p in listed] == [box.id]
    assert "site-cpu" not in create_app(Settings(data_dir=tmp_path / "other", database_url=database_url)) \
        .state.gp.verifier.profiles  # without the setting: the packaged profiles only


@pytest.mark.parametrize(("text", "says"), [
    (MEASURED.replace("eff_low = 0.9", "eff_low = -1"), "profile site-cpu.eff_low: must be a positive number"),
    (MEASURED.replace('arch = "cpu"', ""), "profile site-cpu: missing fields ['arch']"),
    (MEASURED.replace("[profiles.site-cpu]", "[profiles.site-cpu"), "is not TOML"),
    (MEASURED.replace('["site cpu"]', '["H100"]'), "the name 'H100' is already one of profile h100-sxm's names"),
])
def test_a_malformed_profiles_file_is_refused_naming_the_file_and_entry(database_url, tmp_path, capsys, text, says):
    path = tmp_path / "profiles.toml"
    path.write_text(text)
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url, profiles_file=path)
    with pytest.raises(InvalidParameter, match="profiles file .*profiles.toml") as caught:
        create_app(settings)
    assert says in str(caught.value)
    assert not (tmp_path / "data").exists()  # refused before anything was made


def test_gateway_serve_with_a_bad_profiles_file_fails_with_one_line(tmp_path, monkeypatch, capsys):
    path = tmp_path / "profiles.toml"
    path.write_text(MEASURED.replace("int8_tops = 2e-4", 'int8_tops = "fast"'))
    monkeypatch.setenv("GPUPROOF_PROFILES_FILE", str(path))
    assert main(["gateway", "serve", "--data-dir", str(tmp_path / "data"), "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert err == (f"gpuproof: error: profiles file {path}: profile site-cpu.int8_tops: must be a positive "
                   "number, got 'fast'\n")
    monkeypatch.setenv("GPUPROOF_PROFILES_FILE", str(tmp_path / "missing.toml"))
    assert main(["gateway", "serve", "--data-dir", str(tmp_path / "data"), "--port", "1"]) == 2
    assert "missing.toml: cannot read it: No such file or directory" in capsys.readouterr().err
