"""gpuproof: verifiable-compute proof of work for GPU marketplaces.

Installed, `gpuproof` is the product's only top-level import name; its packages keep their own folders at the
top of the repository (pyproject.toml maps them): `gpuproof.kernels` is `kernels/`, `gpuproof.verifier` is
`verifier/`, and so on (docs/architecture.md).
"""

from __future__ import annotations

from pathlib import Path

__version__ = "0.1.0"

# Run from a source checkout without installing (the GPU machine runs bench/device_check.py so), the packages'
# folders sit beside this one: the repository root is searched too. Installed, the wheel holds them here.
_checkout = Path(__file__).resolve().parent.parent
if (_checkout / "pyproject.toml").is_file() and (_checkout / "kernels" / "spec.py").is_file():
    __path__.append(str(_checkout))  # noqa: F821 (a package's __path__)
