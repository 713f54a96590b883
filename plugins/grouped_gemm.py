"""One kernel for y = x W* + b with W* grouped (PGB.md section 8, Algorithm 3).

Program (t, g, n) computes a BLOCK_T x BLOCK_N tile of block g's output:
    acc = x[t_tile][:, pr_g] @ B_g[:, n_tile]        (input gather fused into the loads)
    y[t_tile][:, pc_g[n_tile]] = acc + b[pc_g[n_tile]]  (output scatter fused into the store)
so the permutations never materialise as copies. fp16 and fp32 inputs; the accumulator is
fp32 either way, and fp32 products are IEEE: Triton's default for an fp32 dot is TF32 (10-bit
mantissa), which fp32 parity with ONNX Runtime (1e-4) would not survive.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def grouped_linear_kernel(x_ptr, blocks_ptr, rows_ptr, cols_ptr, bias_ptr, tokens, y_ptr,
                          M: tl.constexpr, N: tl.constexpr, BR: tl.constexpr, BC: tl.constexpr,
                          BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_t = tl.program_id(0)
    g = tl.program_id(1)
    pid_n = tl.program_id(2)
    offs_t = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    t_ok = offs_t < tokens
    n_ok = offs_n < BC
    acc = tl.zeros((BLOCK_T, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, BR, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_ok = offs_k < BR
        rows = tl.load(rows_ptr + g * BR + offs_k, mask=k_ok, other=0)  # pr of block g
        a = tl.load(x_ptr + offs_t[:, None] * M + rows[None, :], mask=t_ok[:, None] & k_ok[None, :], other=0.0)
        b = tl.load(blocks_ptr + g * BR * BC + offs_k[:, None] * BC + offs_n[None, :],
                    mask=k_ok[:, None] & n_ok[None, :], other=0.0)
        acc += tl.dot(a, b, input_precision="ieee")
    cols = tl.load(cols_ptr + g * BC + offs_n, mask=n_ok, other=0)  # pc of block g
    acc += tl.load(bias_ptr + cols, mask=n_ok, other=0.0).to(tl.float32)
    tl.store(y_ptr + offs_t[:, None] * N + cols[None, :], acc.to(y_ptr.dtype.element_ty),
             mask=t_ok[:, None] & n_ok[None, :])


TILES = {"BLOCK_T": 64, "BLOCK_N": 64, "BLOCK_K": 32}


def grid(tokens: int, groups: int, bc: int, tiles: dict = TILES) -> tuple[int, int, int]:
    return triton.cdiv(tokens, tiles["BLOCK_T"]), groups, triton.cdiv(bc, tiles["BLOCK_N"])


def grouped_linear(x: torch.Tensor, blocks: torch.Tensor, row_perm: torch.Tensor,
                   col_perm: torch.Tensor, bias: torch.Tensor, tiles: dict = TILES) -> torch.Tensor:
    """x (..., M) -> (..., N). blocks (G, M/G, N/G) as pruning.repermute.to_blocks gives them,
    row_perm = pr, col_perm = pc (int32 or int64), bias (N,) in original order."""
    groups, br, bc = blocks.shape
    m, n = groups * br, groups * bc
    lead = x.shape[:-1]
    x2 = x.reshape(-1, m).contiguous()
    y = torch.empty(x2.shape[0], n, dtype=x.dtype, device=x.device)
    grouped_linear_kernel[grid(x2.shape[0], groups, bc, tiles)](
        x2, blocks.contiguous(), row_perm.to(torch.int32).contiguous(), col_perm.to(torch.int32).contiguous(),
        bias.contiguous(), x2.shape[0], y, M=m, N=n, BR=br, BC=bc, **tiles)
    return y.reshape(*lead, n)
