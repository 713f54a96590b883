"""Model families, as data: where each supported family keeps its six prunable matrices, its
LayerNorms, embeddings and task heads, how its positions and token types
work, and which inputs it takes. Pruning, the grouped modules and the exporter all read this;
adding a family is one entry here (plus, where its embeddings or head differ in kind, a case
in the exporter's emitters).
"""
from __future__ import annotations

from dataclasses import dataclass


class UnsupportedFamily(ValueError):
    """The model's family is not in the registry."""


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]  # config.model_type values this entry covers
    layers: str  # the layer list, from the base model
    matrices: dict[str, str]  # kind -> path inside a layer (the paper's Q, K, V, O, FFN1, FFN2)
    attention_norm: str  # inside a layer: LayerNorm after the attention residual
    ffn_norm: str  # inside a layer: LayerNorm after the FFN residual
    word_embeddings: str  # from the base model
    position_embeddings: str
    embedding_norm: str
    token_type_embeddings: str | None  # None: the family has none
    # "absolute": position i for token i; "after_padding": RoBERTa's, padding_idx + 1 + the
    # count of attended tokens so far (padding_idx at padded positions)
    positions: str
    inputs: tuple[str, ...]  # the graph's inputs, in order; the tokenizer may emit more
    activation_attr: str  # config attribute naming the FFN activation
    layer_norm_eps_attr: str | None  # None: the family's fixed 1e-12
    # Sequence classification: the head reads the first token and applies these linears
    # (path from the model root, activation after it or None), in order.
    classifier: tuple[tuple[str, str | None], ...]
    # Extractive question answering: one linear on every token, to (start, end) logits.
    question_answering: str = "qa_outputs"

    def path(self, kind: str) -> str:
        return self.matrices[kind]


_BERT_MATRICES = {"query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value",
                  "attn_out": "attention.output.dense", "ffn1": "intermediate.dense", "ffn2": "output.dense"}

FAMILIES = (
    Family("bert", ("bert",), "encoder.layer", _BERT_MATRICES, "attention.output.LayerNorm", "output.LayerNorm",
           "embeddings.word_embeddings", "embeddings.position_embeddings", "embeddings.LayerNorm",
           "embeddings.token_type_embeddings", "absolute", ("input_ids", "attention_mask", "token_type_ids"),
           "hidden_act", "layer_norm_eps",
           (("{base}.pooler.dense", "Tanh"), ("classifier", None))),
    # RoBERTa's layer is BERT's; its single token type is folded into the embeddings.
    Family("roberta", ("roberta", "xlm-roberta", "camembert"), "encoder.layer", _BERT_MATRICES,
           "attention.output.LayerNorm", "output.LayerNorm",
           "embeddings.word_embeddings", "embeddings.position_embeddings", "embeddings.LayerNorm",
           "embeddings.token_type_embeddings", "after_padding", ("input_ids", "attention_mask"),
           "hidden_act", "layer_norm_eps",
           (("classifier.dense", "Tanh"), ("classifier.out_proj", None))),
    Family("distilbert", ("distilbert",), "transformer.layer",
           {"query": "attention.q_lin", "key": "attention.k_lin", "value": "attention.v_lin",
            "attn_out": "attention.out_lin", "ffn1": "ffn.lin1", "ffn2": "ffn.lin2"},
           "sa_layer_norm", "output_layer_norm",
           "embeddings.word_embeddings", "embeddings.position_embeddings", "embeddings.LayerNorm",
           None, "absolute", ("input_ids", "attention_mask"), "activation", None,
           (("pre_classifier", "Relu"), ("classifier", None))),
)
SUPPORTED_MODEL_TYPES = tuple(t for f in FAMILIES for t in f.model_types)
_BY_TYPE = {t: f for f in FAMILIES for t in f.model_types}


def family(model_or_config) -> Family:
    """The family of a model, or of its config."""
    config = getattr(model_or_config, "config", model_or_config)
    try:
        return _BY_TYPE[config.model_type]
    except KeyError:
        raise UnsupportedFamily(f"unsupported architecture {config.model_type!r}; supported: "
                                f"{', '.join(SUPPORTED_MODEL_TYPES)}") from None


def max_tokens(config) -> int:
    """The longest input the position table takes: RoBERTa's positions start after
    padding_idx, so its table holds padding_idx + 1 rows that no token reaches."""
    f = family(config)
    offset = config.pad_token_id + 1 if f.positions == "after_padding" else 0
    return config.max_position_embeddings - offset


def layer_norm_eps(f: Family, config) -> float:
    return getattr(config, f.layer_norm_eps_attr) if f.layer_norm_eps_attr else 1e-12
