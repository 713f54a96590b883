"""The kernel TensorRT's AOT plugin embeds, proven on a machine without a GPU: compiled by
Triton for the H100 and assembled by ptxas, with exactly the parameters TensorRT passes, a
PTX ISA old drivers accept, and IEEE (not TF32) fp32 products."""
import pytest

pytest.importorskip("triton", reason="Triton-lang is not installed (pip install -e '.[kernels]')")

from plugins.aot import ABI, AotError, KernelSpec, _drop_hidden_params, entry_params, prove_in_child  # noqa: E402

SPECS = [KernelSpec("fp16", 384, 1536, 4), KernelSpec("fp16", 1536, 384, 6), KernelSpec("fp32", 384, 384, 3),
         KernelSpec("fp16", 768, 3072, 1), KernelSpec("fp32", 3072, 768, 2), KernelSpec("fp16", 384, 1536, 2, 80)]


@pytest.fixture(scope="module")
def proofs():
    return prove_in_child(SPECS)


def test_every_kernel_assembles_with_tensorrts_parameter_list(proofs):
    for spec, p in zip(SPECS, proofs):
        assert "error" not in p, p
        assert p["param_bytes"] == [8, 8, 8, 8, 8, 4, 8]  # x, blocks, rows, cols, bias | tokens | y
        assert p["arch"] == ("sm_90a" if spec.capability == 90 else "sm_80")
        assert p["threads"] % 32 == 0 and p["shared_bytes"] <= 48 * 1024 and p["registers"] > 0


def test_ptx_isa_is_the_architectures_first(proofs):
    assert [p["ptx_version"] for p in proofs] == ["8.0"] * 5 + ["7.0"]


def test_fp16_uses_tensor_cores_and_fp32_is_not_tf32(proofs):
    for spec, p in zip(SPECS, proofs):
        if spec.dtype == "fp16" and spec.capability == 90:
            assert any(m.startswith("wgmma.mma_async") and ".f16.f16" in m for m in p["mma"]), p["mma"]
        if spec.dtype == "fp32":
            assert not any("tf32" in m for m in p["mma"]), p["mma"]


PTX = """.visible .entry k(
\t.param .u64 .ptr .global .align 1 k_param_0,
\t.param .u32 k_param_1,
\t.param .u64 .ptr .global .align 1 k_param_2,
\t.param .u64 .ptr .global .align 1 k_param_3
)
{
\tld.param.b64 %rd1, [k_param_0];
\tld.param.b32 %r1, [k_param_1];
\tld.param.b64 %rd2, [k_param_2];
BODY
}
"""


def test_hidden_parameters_are_dropped_only_when_unread():
    kept = _drop_hidden_params(PTX.replace("BODY", ""), "k", 3)
    assert entry_params(kept, "k") == ["u64", "u32", "u64"] and "k_param_3" not in kept
    with pytest.raises(AotError, match="reads its hidden parameters"):
        _drop_hidden_params(PTX.replace("BODY", "ld.param.b64 %rd3, [k_param_3];"), "k", 3)
    assert entry_params(PTX, "k") == ["u64", "u32", "u64", "u64"] and len(ABI) == 7
