"""Request and response bodies (pydantic): validated at the edge, hex decoded once."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

HEX64 = re.compile(r"^[0-9a-f]{64}$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DeviceClaim(Strict):
    model: Annotated[str, Field(min_length=1, max_length=200)]
    count: Annotated[int, Field(ge=1, le=64)] = 1
    vram_gib: Annotated[float, Field(gt=0, le=4096)]


class Registration(Strict):
    public_key: Annotated[str, Field(description="Ed25519 public key, 64 hex characters")]
    name: Annotated[str, Field(min_length=1, max_length=100)]
    devices: Annotated[list[DeviceClaim], Field(min_length=1, max_length=64)]
    signature: Annotated[str, Field(description="Ed25519 signature of the registration message, 128 hex")]

    @field_validator("public_key")
    @classmethod
    def _pk(cls, v: str) -> str:
        if not HEX64.match(v):
            raise ValueError("expected 64 lowercase hex characters")
        return v

    @field_validator("signature")
    @classmethod
    def _sig(cls, v: str) -> str:
        if not re.fullmatch(r"[0-9a-f]{128}", v):
            raise ValueError("expected 128 lowercase hex characters")
        return v


class DeviceOut(BaseModel):
    position: int
    model: str
    count: int
    vram_gib: float
    claimed_profile: str
    verified_class: str | None = None


class ProviderOut(BaseModel):
    id: str
    name: str
    public_key: str
    created_at: float
    devices: list[DeviceOut]
    trust: dict[str, Any] | None = None


class ProviderPage(BaseModel):
    items: list[ProviderOut]
    total: int
    limit: int
    offset: int


class NextChallenge(Strict):
    device: Annotated[int, Field(ge=0, le=63, description="position of the device in the registration")] = 0


class CommitmentIn(Strict):
    roots: Annotated[list[str], Field(min_length=1, max_length=100_000)]

    @field_validator("roots")
    @classmethod
    def _roots(cls, v: list[str]) -> list[str]:
        for i, r in enumerate(v):
            if not HEX64.match(r):
                raise ValueError(f"root {i}: expected 64 lowercase hex characters")
        return v


class OpeningIn(Strict):
    round: Annotated[int, Field(ge=0)]
    row: Annotated[int, Field(ge=0)]
    values: Annotated[list[int], Field(max_length=1 << 20)]
    path: Annotated[list[str], Field(max_length=64)]


class OpeningsIn(Strict):
    openings: Annotated[list[OpeningIn], Field(min_length=1, max_length=4096)]


class JobIn(Strict):
    renter_ref: Annotated[str, Field(min_length=1, max_length=200)]
    provider_id: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
    price_ref: Annotated[str, Field(min_length=1, max_length=200)]
    checkpoint_policy: dict[str, Any] = Field(default_factory=dict)


class RttEcho(Strict):
    probe: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
