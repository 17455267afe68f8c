"""GPU hardware profiles (verifier/data/gpu_profiles.toml) and the rates an honest card reaches.

A profile's honest band is [int8_tops * eff_low, int8_tops * eff_high] TOPS on full gpuproof/1 rounds.
An unknown model is never an error and never a zero: `lookup` returns the UNPROFILED profile, whose
challenges are sized from a conservative guess and whose verified class is learned from its own
measured rates (`best_match`).
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from gpuproof.kernels.errors import InvalidParameter

UNPROFILED_KEY = "unprofiled"


@dataclass(frozen=True)
class Profile:
    """One GPU model: datasheet figures and the efficiency band of an honest card on the challenge."""

    key: str
    name: str
    int8_tops: float
    memory_gib: float
    bandwidth_gbs: float
    eff_low: float
    eff_high: float
    measured: bool
    arch: str
    aliases: tuple[str, ...] = ()
    walk_eff_low: float = 0.45
    walk_eff_high: float = 0.95

    def __post_init__(self) -> None:
        for field in ("int8_tops", "memory_gib", "bandwidth_gbs", "eff_low", "eff_high", "walk_eff_low",
                      "walk_eff_high"):
            value = getattr(self, field)
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise InvalidParameter(f"profile {self.key}.{field}", f"must be a positive number, got {value!r}")
        if self.eff_low > self.eff_high:
            raise InvalidParameter(f"profile {self.key}", f"eff_low {self.eff_low} > eff_high {self.eff_high}")
        if self.walk_eff_low > self.walk_eff_high:
            raise InvalidParameter(f"profile {self.key}",
                                   f"walk_eff_low {self.walk_eff_low} > walk_eff_high {self.walk_eff_high}")

    @property
    def bandwidth_low(self) -> float:
        """Slowest honest memory-walk rate, bytes/s (spec v2 memory phase, verifier/memory.py)."""
        return self.bandwidth_gbs * 1e9 * self.walk_eff_low

    @property
    def bandwidth_high(self) -> float:
        """Fastest honest memory-walk rate, bytes/s."""
        return self.bandwidth_gbs * 1e9 * self.walk_eff_high

    @property
    def bandwidth_typical(self) -> float:
        """Geometric middle of the walk band, bytes/s."""
        return math.sqrt(self.bandwidth_low * self.bandwidth_high)

    @property
    def rate_low(self) -> float:
        """Slowest honest rate, ops/s."""
        return self.int8_tops * 1e12 * self.eff_low

    @property
    def rate_high(self) -> float:
        """Fastest honest rate, ops/s."""
        return self.int8_tops * 1e12 * self.eff_high

    @property
    def rate_peak(self) -> float:
        """Physical ceiling, ops/s: the datasheet dense int8 rate, which no card of this model exceeds.

        Where the honest band's top is higher (the CPU reference, whose int8_tops is a nominal figure,
        not a datasheet's), the band's top. The cheat model (docs/threat-model.md) uses this, never the
        estimated eff_high, for what a substitute card can do.
        """
        return self.int8_tops * 1e12 * max(1.0, self.eff_high)

    def is_lesser_than(self, claimed: Profile) -> bool:
        """Whether a renter paying for `claimed` gets less with this card: less memory or a lower peak."""
        return self.memory_gib < claimed.memory_gib or self.int8_tops < claimed.int8_tops

    @property
    def rate_typical(self) -> float:
        """Geometric middle of the honest band, ops/s: what challenges are sized for."""
        return math.sqrt(self.rate_low * self.rate_high)

    @property
    def is_profiled(self) -> bool:
        return self.key != UNPROFILED_KEY


# Sized like a small datacenter card (T4 class), with a band so wide that nothing is slower or faster
# than "claimed": an unprofiled device makes no claim that timing could contradict.
UNPROFILED = Profile(key=UNPROFILED_KEY, name="unprofiled device", int8_tops=100.0, memory_gib=8.0,
                     bandwidth_gbs=200.0, eff_low=1e-6, eff_high=1e6, measured=False, arch="unknown",
                     walk_eff_low=1e-6, walk_eff_high=1e6)


def _normalise(model: str) -> str:
    return " ".join(model.lower().replace("-", " ").replace("_", " ").split())


_NUMBERS = ("int8_tops", "memory_gib", "bandwidth_gbs", "eff_low", "eff_high")
_OPTIONAL_NUMBERS = ("walk_eff_low", "walk_eff_high")  # the memory walk's band; Profile's defaults if absent
_FIELDS = {"name", "aliases", "measured", "arch", *_NUMBERS, *_OPTIONAL_NUMBERS}


def _profile(key: str, entry: object) -> Profile:
    """One `[profiles.KEY]` table as a Profile; InvalidParameter naming the field when it is not one."""
    if not isinstance(entry, dict):
        raise InvalidParameter(f"profile {key}", f"expected a table, got {type(entry).__name__}")
    if not key.strip() or _normalise(key) == UNPROFILED_KEY:
        raise InvalidParameter(f"profile {key!r}", "expected a key other than 'unprofiled'")
    if unknown := sorted(set(entry) - _FIELDS):
        raise InvalidParameter(f"profile {key}", f"unknown fields {unknown}; expected some of {sorted(_FIELDS)}")
    if missing := sorted(_FIELDS - {"aliases", *_OPTIONAL_NUMBERS} - set(entry)):
        raise InvalidParameter(f"profile {key}", f"missing fields {missing}")
    # a bool is an int to Python, and a string would pass float(); neither is a rate
    for field in (*_NUMBERS, *(f for f in _OPTIONAL_NUMBERS if f in entry)):
        if isinstance(entry[field], bool) or not isinstance(entry[field], int | float):
            raise InvalidParameter(f"profile {key}.{field}", f"must be a positive number, got {entry[field]!r}")
    for field in ("name", "arch"):
        if not isinstance(entry[field], str) or not entry[field].strip():
            raise InvalidParameter(f"profile {key}.{field}", f"must be a non-empty string, got {entry[field]!r}")
    if not isinstance(entry["measured"], bool):
        raise InvalidParameter(f"profile {key}.measured", f"must be true or false, got {entry['measured']!r}")
    aliases = entry.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) and a.strip() for a in aliases):
        raise InvalidParameter(f"profile {key}.aliases", f"must be a list of non-empty strings, got {aliases!r}")
    return Profile(key=key, name=entry["name"], aliases=tuple(aliases), measured=entry["measured"],
                   arch=entry["arch"], **{field: float(entry[field]) for field in _NUMBERS},
                   **{field: float(entry[field]) for field in _OPTIONAL_NUMBERS if field in entry})


def _parse(text: str) -> dict[str, Profile]:
    raw = tomllib.loads(text)
    table = raw.get("profiles")
    if not isinstance(table, dict) or not table:
        raise InvalidParameter("profiles", "expected one [profiles.KEY] table or more")
    return {key: _profile(key, entry) for key, entry in table.items()}


@lru_cache(maxsize=1)
def load_profiles() -> Mapping[str, Profile]:
    """All profiles from the packaged data file, by key."""
    return _parse(resources.files("gpuproof.verifier").joinpath("data/gpu_profiles.toml").read_text())


def load_profiles_with(path: str | os.PathLike[str]) -> Mapping[str, Profile]:
    """The packaged profiles with those of an operator's file (same format as the packaged
    verifier/data/gpu_profiles.toml) added, an entry with a packaged key replacing that profile.

    Every entry is validated as a Profile; any fault (an unreadable file, bad TOML, a missing, unknown or
    non-positive field, a name or alias another profile already answers to, so that `lookup` would be
    ambiguous) raises InvalidParameter naming the file and the entry. docs/operations.md, "Measured
    profiles".
    """
    where = f"profiles file {os.fspath(path)}"
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise InvalidParameter(where, f"cannot read it: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InvalidParameter(where, "is not UTF-8 text") from None
    try:
        added = _parse(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidParameter(where, f"is not TOML: {exc}") from None
    except InvalidParameter as exc:
        raise InvalidParameter(where, str(exc)) from None
    merged = {**load_profiles(), **added}
    owner: dict[str, str] = {}
    for profile in merged.values():
        for name in (profile.key, profile.name, *profile.aliases):
            other = owner.setdefault(_normalise(name), profile.key)
            if other != profile.key:
                mine = profile.key if profile.key in added else other
                raise InvalidParameter(where, f"profile {mine}: the name {name!r} is already one of profile "
                                       f"{other if mine == profile.key else profile.key}'s names")
    return merged


def lookup(model: str, profiles: Mapping[str, Profile] | None = None) -> Profile:
    """The profile of a claimed model: by key, name or alias (case, dashes and spaces ignored).

    Unknown models get UNPROFILED, never an error; so does a MIG slice ("NVIDIA H100 80GB HBM3 MIG
    1g.10gb"), whatever card it is cut from: a slice is never its full card. Names match exactly, never
    by prefix, so that no name reaches the profile of a faster card (tests/vectors/model_names.json).
    """
    profiles = load_profiles() if profiles is None else profiles
    wanted = _normalise(model)
    if "mig" in wanted.split():
        return UNPROFILED
    for profile in profiles.values():
        names = (profile.key, profile.name, *profile.aliases)
        if any(_normalise(n) == wanted for n in names):
            return profile
    return UNPROFILED


def best_match(rate: float, profiles: Mapping[str, Profile] | None = None) -> Profile:
    """The profile whose honest band best explains a measured rate (ops/s).

    A band that contains the rate wins (the one whose typical rate is nearest in log space); otherwise the
    band nearest in log space. `cpu-reference` competes like any other profile.
    """
    profiles = load_profiles() if profiles is None else profiles
    if rate <= 0 or not math.isfinite(rate):
        raise ValueError(f"rate must be a positive number, got {rate!r}")

    def distance(p: Profile) -> tuple[int, float]:
        inside = p.rate_low <= rate <= p.rate_high
        if inside:
            return 0, abs(math.log(rate / p.rate_typical))
        edge = p.rate_low if rate < p.rate_low else p.rate_high
        return 1, abs(math.log(rate / edge))

    return min(profiles.values(), key=distance)


def slower_substitute(claimed: Profile, threshold_rate: float,
                      profiles: Mapping[str, Profile] | None = None) -> Profile | None:
    """The fastest profile that cannot reach `threshold_rate` even at its physical peak (`rate_peak`).

    It is the best card a dishonest provider can hold while claiming `claimed` and still be forced to
    skip rows; None when no profile is that slow.
    """
    profiles = load_profiles() if profiles is None else profiles
    slower = [p for p in profiles.values() if p.key != claimed.key and p.rate_peak < threshold_rate]
    return max(slower, key=lambda p: p.rate_peak, default=None)
