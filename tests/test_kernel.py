"""The Triton-lang grouped-linear kernel equals the reference grouped linear: in Triton's
interpreter on the CPU (CI), on the GPU when one is there. Its ahead-of-time form for the
TensorRT plugin is tested in test_plugin_aot."""
import pytest
import torch
from hypothesis import assume, given, settings, strategies as st
from torch import nn

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # CPU: interpreter (tests/conftest.py)
pytest.importorskip("triton", reason="Triton-lang is not installed (pip install -e '.[kernels]')")

from pruning.grouped import GroupedLinear  # noqa: E402
from tests.test_plan import random_plan  # noqa: E402


@settings(max_examples=12, deadline=None)
@given(st.sampled_from([(48, 96), (96, 48), (64, 64), (384, 1536)]), st.sampled_from([1, 2, 3, 4, 6]),
       st.integers(1, 70), st.sampled_from([torch.float32, torch.float16]), st.integers(0, 1000))
def test_kernel_equals_reference(shape, g, tokens, dtype, seed):
    from plugins.grouped_gemm import grouped_linear

    m, n = shape
    assume(m % g == 0 and n % g == 0)
    mp = random_plan(m, n, g, seed)
    torch.manual_seed(seed)
    dense = nn.Linear(m, n)
    with torch.no_grad():
        dense.weight.mul_(mp.mask().T)
    ref = GroupedLinear(dense, mp)
    x = torch.randn(2, tokens, m)
    want = ref(x).detach()
    y = grouped_linear(x.to(DEVICE, dtype), ref.blocks.detach().to(DEVICE, dtype), torch.tensor(mp.row_perm, device=DEVICE),
                       torch.tensor(mp.col_perm, device=DEVICE), dense.bias.detach().to(DEVICE, dtype))
    atol = 1e-4 if dtype == torch.float32 else 5e-2  # fp16 inputs: 11-bit mantissa on sums of up to 384 terms
    torch.testing.assert_close(y.float().cpu(), want, atol=atol, rtol=1e-3)


def test_kernel_matches_the_onnx_plugin_semantics():
    """The numpy reference the plugin graph is checked with == the kernel."""
    import numpy as np

    from plugins.grouped_gemm import grouped_linear
    from plugins.reference import grouped_linear_ref
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 48)).astype(np.float32)
    blocks = rng.standard_normal((4, 12, 6)).astype(np.float32)
    rows, cols = rng.permutation(48).astype(np.int32), rng.permutation(24).astype(np.int32)
    bias = rng.standard_normal(24).astype(np.float32)
    y = grouped_linear(*(torch.from_numpy(a).to(DEVICE) for a in (x, blocks, rows, cols, bias))).cpu().numpy()
    np.testing.assert_allclose(y, grouped_linear_ref(x, blocks, rows, cols, bias), atol=1e-5)
