"""Where the six prunable matrices live in a BERT-family model (BERT, RoBERTa, DistilBERT:
the paths come from `families`).

Convention (PGB.md): a matrix W is (M, N) = (in, out) with y = x W. torch.nn.Linear stores
W^T, so every accessor here transposes exactly once.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

# Kinds in the order a forward pass meets them; compensation relies on this order.
KINDS = ("query", "key", "value", "attn_out", "ffn1", "ffn2")
MHA_KINDS = KINDS[:4]
FFN_KINDS = KINDS[4:]

from .families import family


@dataclass(frozen=True)
class MatrixRef:
    """One prunable matrix: its module path in the model, layer index and kind."""

    name: str
    layer: int
    kind: str
    shape: tuple[int, int]  # (M, N) = (in_features, out_features)


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    base = getattr(model, "base_model", model)
    return base.get_submodule(family(model).layers)


def layer_prefix(model: nn.Module) -> str:
    """The layer list's path from the model root (state-dict names start with it)."""
    base = getattr(model, "base_model", model)
    prefix = getattr(model, "base_model_prefix", "")
    layers = family(model).layers
    return f"{prefix}.{layers}" if base is not model and prefix else layers


def matrices(model: nn.Module) -> list[MatrixRef]:
    """Every prunable matrix, layer by layer, in forward order."""
    refs = []
    prefix, paths = layer_prefix(model), family(model).matrices
    for i, layer in enumerate(encoder_layers(model)):
        for kind in KINDS:
            lin = layer.get_submodule(paths[kind])
            refs.append(MatrixRef(f"{prefix}.{i}.{paths[kind]}", i, kind, (lin.in_features, lin.out_features)))
    return refs


def linear(model: nn.Module, ref: MatrixRef) -> nn.Linear:
    return encoder_layers(model)[ref.layer].get_submodule(family(model).path(ref.kind))


def weight(model: nn.Module, ref: MatrixRef) -> torch.Tensor:
    """W in (in, out) convention, detached, float32."""
    return linear(model, ref).weight.detach().float().T


def num_heads(model: nn.Module) -> int:
    return model.config.num_attention_heads
