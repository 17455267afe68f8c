"""Agent configuration: flags > environment (GPUPROOF_) > config file (TOML in the user's config dir)."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import platformdirs
from gpuproof.kernels.errors import InvalidParameter
from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict


def config_dir() -> Path:
    """GPUPROOF_CONFIG_DIR, else the platform's user config directory for gpuproof."""
    override = os.environ.get("GPUPROOF_CONFIG_DIR")
    return Path(override) if override else Path(platformdirs.user_config_dir("gpuproof"))


def config_file() -> Path:
    return config_dir() / "agent.toml"


class DeviceSpec(BaseModel):
    model: str
    count: int = 1
    vram_gib: float = 0.0
    cuda_index: int = 0


class _TomlFile(PydanticBaseSettingsSource):
    """The lowest-priority source: the agent's config file, if there is one."""

    def get_field_value(self, field, field_name):  # noqa: ANN001, ANN201 - required by the interface
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = config_file()
        if not path.exists():
            return {}
        try:
            return tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise InvalidParameter("config file", f"{path} cannot be read: {exc}") from None


class AgentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GPUPROOF_", extra="ignore")

    gateway: str | None = None
    key_path: Path | None = None
    name: str = Field(default_factory=lambda: os.uname().nodename[:100] or "provider")
    backend: str = "auto"
    devices: list[DeviceSpec] = Field(default_factory=list)
    poll_max_s: float = 60.0

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,  # noqa: ANN001, ANN206
                                   file_secret_settings):
        return init_settings, env_settings, _TomlFile(settings_cls)

    def resolved_key_path(self) -> Path:
        return self.key_path or config_dir() / "provider.key"


def save(values: dict[str, Any]) -> Path:
    """Merge `values` into the config file (written as TOML, mode 0600)."""
    path = config_file()
    current: dict[str, Any] = {}
    if path.exists():
        current = tomllib.loads(path.read_text())
    current.update({k: v for k, v in values.items() if v is not None})
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(_toml(current))
    return path


def _toml(values: dict[str, Any]) -> str:
    lines, tables = [], []
    for key, value in values.items():
        if key == "devices":
            for d in value:
                tables.append("[[devices]]\n" + "".join(f"{k} = {_value(v)}\n" for k, v in d.items()))
        else:
            lines.append(f"{key} = {_value(value)}")
    return "\n".join(lines) + "\n\n" + "\n".join(tables)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'
