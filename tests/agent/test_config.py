"""Agent configuration precedence: flags > environment (GPUPROOF_) > config file."""

from __future__ import annotations

import pytest
from gpuproof.agent import config
from gpuproof.agent.config import AgentSettings


@pytest.fixture
def cfg_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUPROOF_CONFIG_DIR", str(tmp_path))
    monkeypatch.delenv("GPUPROOF_GATEWAY", raising=False)
    monkeypatch.delenv("GPUPROOF_BACKEND", raising=False)
    return tmp_path


def test_file_then_environment_then_flags(cfg_dir, monkeypatch):
    config.save({"gateway": "http://file:1", "backend": "cpu",
                 "devices": [{"model": "NVIDIA T4", "count": 1, "vram_gib": 16.0, "cuda_index": 0}]})
    s = AgentSettings()
    assert s.gateway == "http://file:1" and s.backend == "cpu" and s.devices[0].model == "NVIDIA T4"
    monkeypatch.setenv("GPUPROOF_GATEWAY", "http://env:2")
    assert AgentSettings().gateway == "http://env:2"
    assert AgentSettings(gateway="http://flag:3").gateway == "http://flag:3"
    assert AgentSettings().backend == "cpu"  # untouched fields still come from the file


def test_saved_file_is_private_and_round_trips(cfg_dir):
    path = config.save({"name": 'box "one"', "key_path": "/k"})
    assert (path.stat().st_mode & 0o777) == 0o600
    assert AgentSettings().name == 'box "one"'


def test_broken_file_is_a_clear_error(cfg_dir):
    (cfg_dir / "agent.toml").write_text("gateway = ")
    with pytest.raises(ValueError, match="cannot be read"):
        AgentSettings()
