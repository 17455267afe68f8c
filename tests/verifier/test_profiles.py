"""Hardware profiles: the data file, lookups, unknown models, rate matching."""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

import pytest
from gpuproof.kernels.errors import InvalidParameter
from gpuproof.verifier.profiles import (
    UNPROFILED,
    best_match,
    load_profiles,
    load_profiles_with,
    lookup,
    slower_substitute,
)
from hypothesis import given, settings
from hypothesis import strategies as st

REQUIRED = ["h200", "h100-sxm", "h100-pcie", "a100-80gb", "a100-40gb", "l40s", "l4", "a10", "rtx-6000-ada",
            "rtx-a6000", "rtx-4090", "rtx-3090", "t4", "cpu-reference"]


def test_every_required_model_is_profiled():
    assert set(REQUIRED) <= set(load_profiles())


def test_every_entry_cites_its_source_for_the_datasheet_figures():
    text = resources.files("gpuproof.verifier").joinpath("data/gpu_profiles.toml").read_text()
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
    assert sub is not None and sub.rate_peak < h100.rate_low  # not even at its datasheet peak
    assert all(p.rate_peak >= h100.rate_low or p.rate_peak <= sub.rate_peak for p in profiles.values())


MODEL_NAMES = json.loads((Path(__file__).parent.parent / "vectors" / "model_names.json").read_text())["names"]


@pytest.mark.parametrize("entry", MODEL_NAMES, ids=lambda e: e["name"])
def test_nvidia_smi_name_maps_as_the_table_states(entry):
    assert lookup(entry["name"]).key == entry["profile"], entry["desc"]


@pytest.mark.parametrize("entry", MODEL_NAMES, ids=lambda e: e["name"])
def test_no_name_maps_to_a_profile_faster_than_the_card_it_names(entry):
    profile = lookup(entry["name"])
    if profile.is_profiled:
        assert entry["card_int8_tops"] is not None, f"{entry['name']} maps to {profile.key} with no datasheet figure"
        assert profile.int8_tops <= entry["card_int8_tops"], entry["desc"]


@settings(max_examples=200, deadline=None)
@given(entry=st.sampled_from(MODEL_NAMES), gi=st.sampled_from([1, 2, 3, 4, 7]), mem=st.integers(5, 141),
       extra=st.sampled_from(["", "+me", "+gfx"]), sep=st.sampled_from([" ", "  ", "-"]))
def test_a_mig_slice_of_any_card_is_unprofiled_never_the_full_cards_profile(entry, gi, mem, extra, sep):
    assert lookup(f"{entry['name']}{sep}MIG {gi}g.{mem}gb{extra}") is UNPROFILED


@settings(max_examples=200, deadline=None)
@given(entry=st.sampled_from(MODEL_NAMES), data=st.data())
def test_case_and_spacing_never_change_a_names_profile(entry, data):
    name = "".join(data.draw(st.sampled_from([c.lower(), c.upper()])) for c in entry["name"])
    name = data.draw(st.sampled_from(["", " "])) + name.replace(" ", data.draw(st.sampled_from([" ", "  ", "_"])))
    assert lookup(name).key == entry["profile"]


def test_nvl_cards_have_their_own_slower_profiles_from_the_datasheet():
    profiles = load_profiles()
    for key, sxm, tops, memory in (("h200-nvl", "h200", 1671, 141), ("h100-nvl", "h100-sxm", 1671, 94)):
        p = profiles[key]
        assert (p.int8_tops, p.memory_gib, p.measured, p.arch) == (tops, memory, False, "hopper")
        assert p.int8_tops < profiles[sxm].int8_tops


def test_an_operators_profiles_file_adds_and_overrides_profiles(tmp_path):
    """GPUPROOF_PROFILES_FILE's loader (docs/operations.md, "Measured profiles"): the same format as the
    packaged file; a new key is added, a packaged key replaced, everything else kept."""
    entry = ('name = "{name}"\nint8_tops = {tops}\nmemory_gib = 4\nbandwidth_gbs = 10\neff_low = 0.9\n'
             'eff_high = 1.8\nmeasured = true\narch = "cpu"\n')
    path = tmp_path / "measured.toml"
    path.write_text("[profiles.site-cpu]\n" + entry.format(name="site CPU", tops=2e-4)
                    + "[profiles.cpu-reference]\naliases = [\"cpu\"]\n" + entry.format(name="CPU here", tops=1e-3))
    merged = load_profiles_with(path)
    assert set(merged) == set(load_profiles()) | {"site-cpu"}
    assert lookup("Site CPU", merged).rate_low == pytest.approx(2e-4 * 1e12 * 0.9)
    assert lookup("cpu", merged).int8_tops == 1e-3 and lookup("cpu", merged).key == "cpu-reference"
    assert lookup("H100", merged) == load_profiles()["h100-sxm"]
    path.write_text("[profiles.site-cpu]\n" + entry.format(name="site CPU", tops=2e-4) + "eff_lowe = 1\n")
    with pytest.raises(InvalidParameter, match=r"measured.toml: profile site-cpu: unknown fields \['eff_lowe'\]"):
        load_profiles_with(path)
    path.write_text("[profiles.unprofiled]\n" + entry.format(name="x", tops=1))
    with pytest.raises(InvalidParameter, match="other than 'unprofiled'"):
        load_profiles_with(path)
