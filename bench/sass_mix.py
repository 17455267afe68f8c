#!/usr/bin/env python3
"""Instruction mix of the leaf-hashing loop per SHA-256 compression, per compile-time variant (no GPU).

    python3 bench/sass_mix.py [--arch sm_90] [--out DIR]

Compiles kernels/cuda/gpuproof.cu with nvcc for each variant of bench/kernel_variants.py that touches
SHA-256, disassembles it (cuobjdump + nvdisasm: pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm,
both in the dev extra), and counts the instructions of leaf_hash_1k's main loop (one 64-byte block of
32 chunks: one compression per lane plus its loads) by the pipe that runs them on sm_80/sm_90: the
integer ALU pipe (SHF, LOP3, IADD3, PRMT, ...) and the FMA pipe (IMAD, ...), each 16 lanes per SM
sub-partition, so a warp instruction holds its pipe 2 cycles (IMAD.HI and IMAD.WIDE 4: the rate that
reproduces session 1's measured loss when rotations moved to IMAD), and one instruction issues per cycle.
The bound is max(2 x ALU, FMA-pipe cycles, all) cycles per warp-compression; the model ceiling turns it
into leaf bytes per second for a card (132 SMs at 1.98 GHz: an H100 SXM / H200; a 1 KiB leaf is 17
compressions). It is a static model, not a measurement: on an H200 the default reached 80% of its
ceiling and the all-ALU variant 91% (docs/cuda.md).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "kernels" / "cuda" / "gpuproof.cu"

VARIANTS = {
    "default": (),
    "leaf-alu": ("GP_LEAF_FMA=0",),
    "t1-fma": ("GP_T1_FMA=1",),
}
ALU = {"SHF", "LOP3", "IADD3", "PRMT", "LEA", "ISETP", "SEL", "MOV", "PLOP3", "VIADD", "IABS", "IMNMX", "SHL", "SHR"}
FMA = {"IMAD", "HFMA2", "FFMA", "IMUL"}
SMS, CLOCK_HZ = 132, 1.98e9
LEAF_BYTES_PER_COMPRESSION = 1024 / 17


def tool(name: str) -> str | None:
    """A CUDA binary tool from PATH or from the nvidia-cuda-* wheels."""
    found = shutil.which(name)
    if found:
        return found
    try:
        import nvidia  # the namespace package of the nvidia-* wheels
    except ImportError:
        return None
    for root in getattr(nvidia, "__path__", []):
        for path in Path(root).glob(f"cu*/bin/{name}"):
            return str(path)
    return None


def missing_tools() -> list[str]:
    return [name for name in ("nvcc", "cuobjdump", "nvdisasm") if tool(name) is None]


def disassemble(defines: tuple[str, ...], arch: str, work: Path) -> tuple[str, str]:
    """(SASS text, ptxas -v log) of the source compiled with `defines`."""
    cubin = work / "k.cubin"
    built = subprocess.run([tool("nvcc") or "nvcc", f"-arch={arch}", "-cubin", "-Xptxas", "-v",
                            *[f"-D{d}" for d in defines], "-o", str(cubin), str(SOURCE)],
                           capture_output=True, text=True, timeout=300)
    if built.returncode != 0:
        raise RuntimeError(built.stderr)
    env = dict(os.environ, PATH=f"{Path(tool('nvdisasm') or 'nvdisasm').parent}:{os.environ.get('PATH', '')}")
    sass = subprocess.run([tool("cuobjdump") or "cuobjdump", "-sass", str(cubin)], capture_output=True, text=True,
                          timeout=300, env=env)
    if sass.returncode != 0:
        raise RuntimeError(sass.stderr)
    return sass.stdout, built.stdout + built.stderr


def function_ops(sass: str, function: str) -> list[tuple[int, str, str]]:
    """(offset, opcode, operands) of every instruction of one kernel."""
    parts = re.split(r"\n\s*Function : (\w+)", sass)
    body = dict(zip(parts[1::2], parts[2::2], strict=True))[function]
    ops = []
    for line in body.splitlines():
        m = re.match(r"\s*/\*([0-9a-f]+)\*/\s+(?:@!?U?P\w+\s+)?([A-Z0-9_.]+)(.*)", line)
        if m:
            ops.append((int(m.group(1), 16), m.group(2), m.group(3)))
    return ops


def main_loop(ops: list[tuple[int, str, str]]) -> collections.Counter[str]:
    """Opcodes of the longest loop (the body between a backward branch and its target)."""
    loops = []
    for off, op, rest in ops:
        target = re.search(r"0x([0-9a-f]+)", rest)
        if op.startswith("BRA") and target and int(target.group(1), 16) < off:
            loops.append((int(target.group(1), 16), off))
    if not loops:
        raise RuntimeError("no loop found in leaf_hash_1k")
    lo, hi = max(loops, key=lambda span: span[1] - span[0])
    return collections.Counter(op for off, op, _ in ops if lo <= off <= hi)


def registers(log: str, function: str) -> int:
    m = re.search(rf"Compiling entry function '{function}'.*?Used (\d+) registers", log, re.S)
    return int(m.group(1)) if m else -1


def mix(defines: tuple[str, ...], arch: str) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        sass, log = disassemble(defines, arch, Path(tmp))
    ops = function_ops(sass, "leaf_hash_1k")
    loop = main_loop(ops)
    alu = sum(n for op, n in loop.items() if op.split(".")[0] in ALU)
    fma = sum(n for op, n in loop.items() if op.split(".")[0] in FMA)
    half_rate = sum(n for op, n in loop.items() if op.startswith(("IMAD.HI", "IMAD.WIDE")))
    total = sum(loop.values())
    fma_cycles = 2 * fma + 2 * half_rate
    cycles = max(2 * alu, fma_cycles, total)
    compressions_per_s = SMS * 4 * 32 / cycles * CLOCK_HZ
    return {"defines": list(defines), "registers": registers(log, "leaf_hash_1k"),
            "local_memory_ops": sum(1 for _, op, _ in ops if op.startswith(("LDL", "STL"))),
            "instructions": total, "alu": alu, "fma": fma, "other": total - alu - fma, "bound_cycles": cycles,
            "half_rate": half_rate,
            "bound_by": "ALU" if cycles == 2 * alu else "FMA" if cycles == fma_cycles else "issue",
            "ceiling_gbps": compressions_per_s * LEAF_BYTES_PER_COMPRESSION / 1e9,
            "top": dict(loop.most_common(8))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="sm_90")
    ap.add_argument("--variants", nargs="*", choices=sorted(VARIANTS), default=list(VARIANTS))
    ap.add_argument("--out", type=Path, help="write sass_mix.json there")
    args = ap.parse_args(argv)
    missing = missing_tools()
    if missing:
        print(f"sass_mix: {', '.join(missing)} not found (pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm; "
              "nvcc from the CUDA toolkit)", file=sys.stderr)
        return 2
    rows = {name: mix(VARIANTS[name], args.arch) for name in args.variants}
    print(f"leaf_hash_1k main loop per compression, {args.arch}; model: {SMS} SMs at {CLOCK_HZ / 1e9:.2f} GHz")
    print("variant | registers | instructions | ALU pipe | FMA pipe (of which half-rate) | other | "
          "bound (cycles/warp-compression) | model ceiling GB/s")
    for name, r in rows.items():
        print(f"{name} | {r['registers']} | {r['instructions']} | {r['alu']} | {r['fma']} ({r['half_rate']}) | "
              f"{r['other']} | {r['bound_cycles']} ({r['bound_by']}) | {r['ceiling_gbps']:.0f}")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "sass_mix.json").write_text(json.dumps({"arch": args.arch, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
