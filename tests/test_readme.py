"""The README's quick start is what CI proves: its test command must appear verbatim in .ci/run."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def quick_start_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.+?)\n```", section, flags=re.S)


def test_quick_start_has_exactly_two_commands():
    commands = quick_start_commands()
    assert len(commands) == 2
    assert "gpuproof challenge run" in commands[0] or "gpuproof demo" in commands[0]
    assert "-e '.[server]'" in commands[0]  # the demo runs a gateway: the server extra, and not the dev one
    assert "pytest" in commands[1]


def test_ci_runs_both_readme_commands_verbatim():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert quick_start_commands()[1] in ci and quick_start_commands()[0] in ci


def test_ci_runs_the_main_job_on_a_fresh_venv_before_the_dev_extra_is_installed():
    """A runtime module that only the dev extra brings must fail CI (issue 14): the demo runs first, on a venv
    made just for it, and the venv is removed before and after, so neither command sees the other's packages."""
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    main, tests = (ci.index(c) for c in quick_start_commands())
    assert main < tests
    assert "rm -rf .venv" in ci[:main] and "rm -rf .venv" in ci[main + 1:tests]
    dev_installs = [i for i, line in enumerate(ci) if "[dev]" in line and not line.startswith("#")]
    assert dev_installs == [tests]


def section_commands(title: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split(f"## {title}", 1)[1].split("\n## ", 1)[0]
    return [line for block in re.findall(r"```sh\n(.+?)\n```", section, flags=re.S) for line in block.splitlines()]


def test_run_a_provider_and_query_trust_sections_work_as_written(tmp_path):
    """Runs the README's commands in bash, only the port changed to a free one and state kept in tmp dirs."""
    import os
    import subprocess
    import sys

    from tests.support.server import free_port

    port = str(free_port())
    commands = section_commands("Run a provider") + section_commands("Query trust")
    assert commands and all(c.startswith("gpuproof ") for c in commands)
    bindir = Path(sys.executable).parent
    script = "set -e\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n" + "\n".join(
        c.replace("8080", port) for c in commands) + "\n"
    env = dict(os.environ, GPUPROOF_CONFIG_DIR=str(tmp_path / "config"), GPUPROOF_DATA_DIR=str(tmp_path / "data"),
               PATH=f"{bindir}{os.pathsep}{os.environ['PATH']}")
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=300,
                         stdin=subprocess.DEVNULL, cwd=tmp_path)
    assert out.returncode == 0, (out.stdout[-2000:], out.stderr[-2000:])
    assert "would PASS" in out.stdout
    assert '"event": "verdict"' in out.stdout and '"outcome": "pass"' in out.stdout
    assert "verified class cpu-reference" in out.stdout
    assert "tree head of" in out.stdout
