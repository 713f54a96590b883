"""Kernels and TensorRT plugins for PGB grouped linears.

grouped_gemm: one Triton-lang kernel for a whole grouped linear (all G blocks in one
launch, input gather and output scatter fused); runs under PyTorch on a GPU and in
Triton's interpreter on the CPU (TRITON_INTERPRET=1).
aot: the kernel compiled ahead of time to the PTX TensorRT embeds, and the checks a
machine without a GPU can make of it (parameter list, PTX ISA, ptxas for the target).
trt_plugin: the same kernel registered as a TensorRT plugin with an ahead-of-time
implementation, so engines that use it need no Python at serving time.
"""
