"""The processes a test started, found through /proc (Linux), so that a test can show none is left behind
and kill them all when something goes wrong. A process is named by its pid and start time, so a pid the
kernel reused for something else is never mistaken for it (nor killed)."""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class Proc:
    pid: int
    start: int  # clock ticks after boot (field 22 of /proc/<pid>/stat)
    cmdline: str = ""


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, start time), or None when the process is gone."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # the name, in parentheses, may hold spaces
    return fields[0], int(fields[1]), int(fields[19])


def _cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return (PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    return ""


def descendants(pid: int) -> list[Proc]:
    """Every living process under `pid` (children, their children, ...), not `pid` itself."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None and stat[0] != "Z":
            children.setdefault(stat[1], []).append(int(entry.name))
    found, todo = [], list(children.get(pid, []))
    while todo:
        child = todo.pop()
        if (stat := _stat(child)) is not None:
            found.append(Proc(child, stat[2], _cmdline(child)))
        todo.extend(children.get(child, []))
    return found


def me(pid: int) -> Proc:
    stat = _stat(pid)
    assert stat is not None, f"process {pid} is gone"
    return Proc(pid, stat[2], _cmdline(pid))


def alive(procs: list[Proc]) -> list[Proc]:
    """Those of `procs` still running (a zombie has exited: it only waits to be reaped)."""
    return [p for p in procs if (stat := _stat(p.pid)) is not None and stat[2] == p.start and stat[0] != "Z"]


def in_directory(path: Path) -> list[Proc]:
    """Living processes of this user whose working directory is `path` or under it (also once deleted)."""
    found = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd").removesuffix(" (deleted)")
        except OSError:  # gone, or another user's
            continue
        if (cwd == str(path) or cwd.startswith(f"{path}/")) and (stat := _stat(int(entry.name))) and stat[0] != "Z":
            found.append(Proc(int(entry.name), stat[2], _cmdline(int(entry.name))))
    return found


def kill(procs: list[Proc]) -> None:
    """SIGKILL each of `procs` that still runs (and is still the same process)."""
    for p in alive(procs):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p.pid, signal.SIGKILL)


def kill_tree(pid: int) -> None:
    """SIGKILL `pid`, its process group when it leads one, and every process under it, found first (once
    `pid` is gone its children are re-parented and cannot be told apart any more)."""
    under = descendants(pid)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)
    kill(under)
