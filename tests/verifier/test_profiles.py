"""Hardware profiles: the data file, lookups, unknown models, rate matching."""

from __future__ import annotations

import re
from importlib import resources

import pytest

from verifier.profiles import UNPROFILED, best_match, load_profiles, lookup, slower_substitute

REQUIRED = ["h200", "h100-sxm", "h100-pcie", "a100-80gb", "a100-40gb", "l40s", "l4", "a10", "rtx-6000-ada",
            "rtx-a6000", "rtx-4090", "rtx-3090", "t4", "cpu-reference"]


def test_every_required_model_is_profiled():
    assert set(REQUIRED) <= set(load_profiles())


def test_every_entry_cites_its_source_for_the_datasheet_figures():
    text = resources.files("verifier").joinpath("data/gpu_profiles.toml").read_text()
    for block in text.split("[profiles.")[1:]:
        key = block.split("]", 1)[0]
        for field in ("int8_tops", "memory_gib", "bandwidth_gbs", "eff_low"):
            line = re.search(rf"^{field} = .*$", block, flags=re.M).group(0)
            assert "#" in line and len(line.split("#", 1)[1].strip()) > 8, f"{key}.{field} has no source"


@pytest.mark.parametrize("model, key", [
    ("NVIDIA H100 80GB HBM3", "h100-sxm"), ("h100_sxm", "h100-sxm"), ("Tesla T4", "t4"),
    ("NVIDIA A100-SXM4-80GB", "a100-80gb"), ("nvidia geforce rtx 4090", "rtx-4090"), ("NVIDIA H200", "h200"),
])
def test_lookup_by_name_alias_or_key(model, key):
    assert lookup(model).key == key


@pytest.mark.parametrize("model", ["NVIDIA B200", "AMD MI300X", "some future card", "x"])
def test_unknown_model_is_unprofiled_never_an_error(model):
    p = lookup(model)
    assert p is UNPROFILED and not p.is_profiled and p.rate_typical > 0


def test_best_match_prefers_a_band_that_contains_the_rate():
    profiles = load_profiles()
    a100 = profiles["a100-80gb"]
    assert best_match(a100.rate_typical).key in ("a100-80gb", "a100-40gb")
    assert best_match(profiles["t4"].rate_typical).key == "t4"
    assert best_match(60e9).key == "cpu-reference"
    with pytest.raises(ValueError):
        best_match(0)


def test_slower_substitute_cannot_reach_the_threshold():
    profiles = load_profiles()
    h100 = profiles["h100-sxm"]
    sub = slower_substitute(h100, h100.rate_low)
    assert sub is not None and sub.rate_high < h100.rate_low
    assert all(p.rate_high >= h100.rate_low or p.rate_high <= sub.rate_high for p in profiles.values())
