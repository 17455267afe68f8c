"""The packages show the architecture (issue 15): a provider box runs the agent and the SDK without the
server's dependencies, the agent and the SDK import neither the server nor the simulators of cheating, and
only the CUDA backend modules import CuPy."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.support.server import ROOT

SERVER_ONLY = ("fastapi", "sqlalchemy", "alembic", "uvicorn", "psycopg", "starlette", "jinja2")

# Run in a fresh interpreter: a meta-path finder makes every server-only distribution unimportable, as on a
# provider box that installed none of them.
BLOCKER = f"""
import sys

BLOCKED = {SERVER_ONLY!r}

class NoServer:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"{{name}} is not installed on this provider box", name=name)
        return None

sys.meta_path.insert(0, NoServer())
"""

PROVIDER_BOX = BLOCKER + """
import json

import httpx

import gpuproof.agent.checkpointing, gpuproof.agent.config, gpuproof.agent.daemon, gpuproof.agent.detect
import gpuproof.agent.keys, gpuproof.agent.training
from gpuproof.client import AsyncGatewayClient, GatewayClient
from gpuproof.cli import main

trust = {"provider_id": "0" * 32, "score": 0.9, "lower_bound": 0.8, "evidence": 5, "effective_evidence": 5.0,
         "verified_class": "h100-sxm", "last_verified_at": 1.0, "status": "trusted", "reasons": []}
transport = httpx.MockTransport(lambda request: httpx.Response(200, json=trust))
with GatewayClient("http://gateway.invalid", transport=transport) as client:
    assert client.trust("0" * 32).model_dump(mode="json") == trust  # parsed into its model (pydantic alone)
assert callable(AsyncGatewayClient.trust.__get__(AsyncGatewayClient("http://gateway.invalid")))
assert main(["agent", "init"]) == 0
code = main(["agent", "selftest", "--shape", "64,512,256,2", "--backend", "cpu"])
assert code in (0, 1), code  # 1: this machine is busy and would fail the timing; it ran either way
loaded = sorted({m.split(".")[0] for m in sys.modules} & set(BLOCKED))
print(json.dumps({"selftest": code, "server_modules": loaded}))
"""


def test_a_provider_box_runs_the_agent_without_the_server_dependencies(tmp_path):
    config = tmp_path / "config"
    config.mkdir()
    (config / "agent.toml").write_text('backend = "cpu"\n[[devices]]\nmodel = "cpu-reference"\nvram_gib = 1.0\n')
    env = {**os.environ, "GPUPROOF_CONFIG_DIR": str(config)}
    env.pop("GPUPROOF_GATEWAY", None)
    run = subprocess.run([sys.executable, "-c", PROVIDER_BOX], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300, stdin=subprocess.DEVNULL)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "device 0 (cpu-reference" in run.stdout, run.stdout
    assert '"server_modules": []' in run.stdout, run.stdout


def test_the_blocker_blocks():
    """The check above can fail: with the blocker in place, the gateway's app does not import."""
    run = subprocess.run([sys.executable, "-c", BLOCKER + "import gpuproof.gateway.app"], capture_output=True,
                         text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert run.returncode != 0 and "not installed on this provider box" in run.stderr


def _requirement_names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\[<>=!~;\s]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}


def test_the_server_packages_are_an_extra_not_dependencies():
    """`pip install gpuproof` on a provider's box brings none of the server; `gpuproof[server]` brings it."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = _requirement_names(project["dependencies"])
    server = _requirement_names(project["optional-dependencies"]["server"])
    assert base & server == set()
    assert {"fastapi", "uvicorn", "sqlalchemy", "alembic", "psycopg", "starlette", "jinja2", "fastapi-offline",
            "prometheus-client", "httpcore"} <= server
    assert any(r.startswith("gpuproof[") and "server" in r for r in project["optional-dependencies"]["dev"])


@pytest.mark.parametrize("command", [["gateway", "serve"], ["gateway", "migrate"], ["gateway", "openapi"],
                                     ["gateway", "api-key", "create", "--name", "x", "--scope", "jobs"],
                                     ["demo", "--duration", "5"]], ids=" ".join)
def test_without_the_server_extra_the_gateway_commands_say_so_in_one_line(tmp_path, command):
    env = {**os.environ, "GPUPROOF_CONFIG_DIR": str(tmp_path / "config"), "GPUPROOF_DATA_DIR": str(tmp_path / "data")}
    script = BLOCKER + f"from gpuproof.cli import main\nsys.exit(main({command!r}))\n"
    run = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120, stdin=subprocess.DEVNULL)
    assert run.returncode == 1, run.stderr[-3000:]
    assert run.stdout == ""
    (line,) = run.stderr.splitlines()
    assert re.fullmatch(r"gpuproof: error: the (gateway|demo \(it runs a gateway\)) needs the server extra "
                        r"\(\w+ is not installed\): pip install 'gpuproof\[server\]'", line), line


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(module, at module level?) for every import statement of a file; relative imports resolved as absolute
    names are not used in this project, so they are reported as written."""
    tree = ast.parse(path.read_text(), str(path))
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found += [(f"{node.module}.{alias.name}", id(node) in top) for alias in node.names]
    return found


def _modules(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def _is(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_agent_and_the_sdk_import_neither_the_server_nor_the_simulators():
    bad = [f"{p.relative_to(ROOT)}: {m}" for p in _modules("agent", "client") for m, _ in _imports(p)
           if _is(m, "gpuproof.gateway") or _is(m, "gpuproof.simulators") or m.split(".")[0] in SERVER_ONLY]
    assert bad == []


def test_only_the_admin_and_demo_commands_load_the_server_and_only_lazily():
    """cli/admin.py may read the gateway package's own __init__ (a dict of API-key scopes, free of imports) at
    module level; every other server module, there and in cli/demo.py, is imported inside a function."""
    allowed = {"admin.py", "demo.py"}
    bad = []
    for path in _modules("cli"):
        for module, at_top in _imports(path):
            server = _is(module, "gpuproof.gateway") or module.split(".")[0] in SERVER_ONLY
            if not server:
                continue
            if path.name not in allowed:
                bad.append(f"{path.name}: {module}")
            elif at_top and module != "gpuproof.gateway.API_KEY_SCOPES":
                bad.append(f"{path.name}: {module} at module level")
    assert bad == []
    assert [m for m, _ in _imports(ROOT / "gateway" / "__init__.py")] == []


def test_only_the_demo_wires_in_the_simulators():
    users = sorted({p.relative_to(ROOT).as_posix() for p in _modules("agent", "client", "cli", "kernels", "verifier",
                                                                      "gateway")
                    for m, _ in _imports(p) if _is(m, "gpuproof.simulators")})
    assert users == ["cli/demo.py"]


def test_only_the_cuda_modules_import_cupy():
    """CuPy is imported by the CUDA modules of kernels/, probed by kernels/backend.py and agent/detect.py (is
    there a GPU?), and nowhere else: the verifier's checkpoint hashing on the GPU is kernels/cuda_checkpoints.py."""
    users = sorted({p.relative_to(ROOT).as_posix() for p in _modules("kernels", "verifier", "gateway", "agent",
                                                                      "client", "cli", "simulators")
                    for m, _ in _imports(p) if _is(m, "cupy")})
    probes = {"kernels/backend.py", "agent/detect.py"}
    assert "kernels/cuda_checkpoints.py" in users
    assert [u for u in users if u not in probes and not u.startswith("kernels/cuda_")] == []
