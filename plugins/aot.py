"""Ahead-of-time compilation of the grouped-linear kernel into the PTX that the TensorRT
plugin embeds in an engine, and the checks that prove it on a machine without a GPU.

Three things TensorRT's AOT launcher needs that Triton does not give by default:
- The exact parameter list. TensorRT passes (input pointers, extra scalars, output
  pointers); Triton 3.3+ appends hidden global- and profile-scratch pointers. A kernel that
  needs no scratch never reads them, so they are dropped from the PTX entry; TensorRT would
  otherwise launch a 9-parameter kernel with 7 arguments.
- A PTX ISA the serving driver can JIT. Triton declares the newest ISA its bundled ptxas
  knows (9.x, CUDA 13 drivers only); the kernel needs nothing newer than the architecture's
  first ISA, so that is what is declared (`MIN_PTX`).
- Real fp32. Triton's fp32 dot defaults to TF32; the kernel asks for IEEE (grouped_gemm).
`assemble` runs Triton's bundled ptxas on the result, so CI proves each of these for sm_90a.

`python -m plugins.aot` reads kernel specs as JSON on stdin and writes the proofs as JSON:
pgb-export runs it in a child process because Triton's interpreter mode, which the CPU tests
use, is fixed per process at import and cannot compile.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

# x, blocks, rows, cols, bias | tokens | y: TensorRT's (inputs, extras, outputs) order
ABI = ("u64", "u64", "u64", "u64", "u64", "u32", "u64")
# The first PTX ISA of each architecture (PTX ISA release notes): 7.0 sm_80, 7.1 sm_86,
# 7.8 sm_89, 8.0 sm_90a. Older drivers JIT it; nothing in the kernel needs a later one.
MIN_PTX = {80: 70, 86: 71, 89: 78, 90: 80}


class AotError(RuntimeError):
    """The kernel cannot be given to TensorRT's AOT launcher as compiled."""


@dataclass(frozen=True)
class KernelSpec:
    dtype: str  # "fp16" | "fp32"
    m: int
    n: int
    groups: int
    capability: int = 90


@dataclass(frozen=True)
class AotKernel:
    name: str
    ptx: str
    arch: str  # ptxas -arch, e.g. sm_90a
    threads: int  # block_x TensorRT must launch with (the PTX's .reqntid)
    shared: int  # dynamic shared memory per block, bytes


def compile_kernel(spec: KernelSpec) -> AotKernel:
    """PTX for one (dtype, shape, G) with exactly the `ABI` parameters; needs no GPU."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.backends.nvidia.compiler import sm_arch_from_capability
    from triton.compiler import ASTSource

    from .grouped_gemm import TILES, grouped_linear_kernel  # here: AotError, KernelSpec need no Triton
    elem = {"fp16": "*fp16", "fp32": "*fp32"}[spec.dtype]
    signature = {"x_ptr": elem, "blocks_ptr": elem, "rows_ptr": "*i32", "cols_ptr": "*i32",
                 "bias_ptr": elem, "tokens": "i32", "y_ptr": elem,
                 "M": "constexpr", "N": "constexpr", "BR": "constexpr", "BC": "constexpr",
                 "BLOCK_T": "constexpr", "BLOCK_N": "constexpr", "BLOCK_K": "constexpr"}
    constexprs = {"M": spec.m, "N": spec.n, "BR": spec.m // spec.groups, "BC": spec.n // spec.groups, **TILES}
    src = ASTSource(fn=grouped_linear_kernel, signature=signature, constexprs=constexprs)
    options = {"ptx_version": MIN_PTX[spec.capability]} if spec.capability in MIN_PTX else {}
    compiled = triton.compile(src, target=GPUTarget("cuda", spec.capability, 32), options=options)
    meta = compiled.metadata
    scratch = getattr(meta, "global_scratch_size", 0) + getattr(meta, "profile_scratch_size", 0)
    if scratch:
        raise AotError(f"{meta.name} needs {scratch} bytes of global scratch, which TensorRT's AOT launcher "
                       "cannot pass")
    if meta.shared > 48 * 1024:  # more needs a per-kernel opt-in that TensorRT's launcher is not documented to make
        raise AotError(f"{meta.name} needs {meta.shared} bytes of shared memory; TensorRT launches with at most 48 KiB")
    ptx = _drop_hidden_params(compiled.asm["ptx"], meta.name, len(ABI))
    return AotKernel(meta.name, ptx, sm_arch_from_capability(spec.capability), meta.num_warps * 32, meta.shared)


def entry_params(ptx: str, name: str) -> list[str]:
    """The PTX types of kernel `name`'s parameters, in order."""
    return [t for t, _ in _params(ptx, name)[2]]


def _params(ptx: str, name: str) -> tuple[int, int, list[tuple[str, str]]]:
    m = re.search(rf"\.entry\s+{re.escape(name)}\s*\((.*?)\)", ptx, re.S)
    if not m:
        raise AotError(f"no .entry {name} in the PTX")
    decls = re.findall(r"\.param\s+\.(\w+)[^,]*?\s(\w+)\s*(?:,|$)", m.group(1).strip())
    return m.start(1), m.end(1), decls


def _drop_hidden_params(ptx: str, name: str, keep: int) -> str:
    start, end, decls = _params(ptx, name)
    body = ptx[end:]
    used = [p for _, p in decls[keep:] if p in body]
    if used:
        raise AotError(f"{name} reads its hidden parameters {used}; they cannot be dropped")
    kept = ",\n".join(line.strip().rstrip(",") for line in ptx[start:end].strip().splitlines()[:keep])
    return ptx[:start] + "\n\t" + kept + "\n" + ptx[end:]


def assemble(kernel: AotKernel) -> dict:
    """Assemble the PTX with Triton's bundled ptxas, as the driver's JIT will: registers,
    spills, and the cubin's parameter sizes (from cuobjdump), which must match `ABI`."""
    from triton import knobs

    with tempfile.TemporaryDirectory() as tmp:
        ptx_path, cubin = Path(tmp) / "k.ptx", Path(tmp) / "k.cubin"
        ptx_path.write_text(kernel.ptx)
        r = subprocess.run([knobs.nvidia.ptxas.path, f"-arch={kernel.arch}", "-v", str(ptx_path), "-o", str(cubin)],
                           capture_output=True, text=True)
        if r.returncode:
            raise AotError(f"ptxas refused {kernel.name} for {kernel.arch}: {r.stderr.strip().splitlines()[-1]}")
        elf = subprocess.run([knobs.nvidia.cuobjdump.path, "-elf", str(cubin)], capture_output=True, text=True,
                             check=True).stdout
    spills = sum(map(int, re.findall(r"(\d+) bytes spill (?:stores|loads)", r.stderr)))
    sizes = dict(sorted((int(o, 16), int(s, 16)) for o, s in re.findall(r"Ordinal : (0x[0-9a-f]+)\s+Offset\s+:\s+0x[0-9a-f]+\s+"
                                                                        r"Size\s+:\s+(0x[0-9a-f]+)", elf)))
    return {"registers": int(re.search(r"Used (\d+) registers", r.stderr).group(1)), "spill_bytes": spills,
            "param_bytes": list(sizes.values())}


def prove(spec: KernelSpec) -> dict:
    """Compile and assemble one kernel; its TensorRT launch facts, or AotError."""
    kernel = compile_kernel(spec)
    params = entry_params(kernel.ptx, kernel.name)
    if tuple(params) != ABI:
        raise AotError(f"{kernel.name} takes ({', '.join(params)}), TensorRT passes ({', '.join(ABI)})")
    facts = assemble(kernel)
    want = [8 if t == "u64" else 4 for t in ABI]
    if facts["param_bytes"] != want:
        raise AotError(f"{kernel.name}'s cubin takes parameters of {facts['param_bytes']} bytes, not {want}")
    ptx_version = re.search(r"^\.version\s+(\S+)", kernel.ptx, re.M).group(1)
    mma = sorted(set(re.findall(r"\bwgmma\.mma_async\S*|\bmma\.sync\S*", kernel.ptx)))  # none: FMA only
    return {**asdict(spec), "arch": kernel.arch, "ptx_version": ptx_version, "threads": kernel.threads,
            "shared_bytes": kernel.shared, "mma": mma, **facts}


def prove_in_child(specs: list[KernelSpec], timeout: float = 600) -> list[dict]:
    """`prove` for each spec in a child process with Triton's compiler (see module doc);
    each result is the facts or {"error": ...}."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-m", "plugins.aot"], input=json.dumps([asdict(s) for s in specs]),
                       capture_output=True, text=True, env=env, timeout=timeout,
                       cwd=Path(__file__).resolve().parents[1])
    if r.returncode:
        raise AotError(f"the kernel compiler failed: {(r.stderr.strip().splitlines() or ['no output'])[-1]}")
    return json.loads(r.stdout)


def main() -> None:
    results = []
    for s in json.load(sys.stdin):
        spec = KernelSpec(**s)
        try:
            results.append(prove(spec))
        except AotError as e:
            results.append({**asdict(spec), "error": str(e)})
    print(json.dumps(results))


if __name__ == "__main__":
    main()
