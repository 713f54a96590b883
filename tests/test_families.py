"""Every supported family (BERT, RoBERTa, DistilBERT) through the same pruning modules and
the same exporter, read from pruning.families: tiny random models of each, grouped and
dropped matrices, padded batches and sentence pairs, compared with transformers' own forward
in a real ONNX Runtime session."""
import numpy as np
import onnxruntime as ort
import pytest
import torch
from transformers import (BertConfig, BertForSequenceClassification, DistilBertConfig,
                          DistilBertForSequenceClassification, RobertaConfig, RobertaForSequenceClassification)

from pgb_export import trt_compat
from pgb_export.activations import ACTIVATIONS
from pgb_export.bert_graph import ExportError, build
from pgb_export.bert_io import BERT_IO
from pgb_export.census import census
from pgb_export.grouped_linear import LinearOptions
from pruning import bert, compensation, cost, importance, repermute
from pruning.families import UnsupportedFamily, family
from pruning.grouped import replace_linears
from tests.test_export_graph import CASES, plan_with

PAD = {"bert": 0, "roberta": 1, "distilbert": 0}


def tiny(name: str, seed: int = 0, act: str = "gelu"):
    """act: the FFN activation, by transformers' name."""
    torch.manual_seed(seed)
    common = dict(vocab_size=120, num_labels=3)
    if name == "bert":
        model = BertForSequenceClassification(BertConfig(hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
                                                         intermediate_size=192, max_position_embeddings=64,
                                                         hidden_act=act, **common))
    elif name == "roberta":  # RoBERTa's own conventions: pad id 1, positions after padding_idx, one token type
        model = RobertaForSequenceClassification(RobertaConfig(
            hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=192,
            max_position_embeddings=66, pad_token_id=1, type_vocab_size=1, hidden_act=act, **common))
    else:
        model = DistilBertForSequenceClassification(DistilBertConfig(dim=48, n_layers=2, n_heads=4, hidden_dim=192,
                                                                     max_position_embeddings=64, activation=act,
                                                                     **common))
    with torch.no_grad():  # non-zero biases and LayerNorms, so that "biases stay" can fail
        for n, p in model.named_parameters():
            if n.endswith("bias") or "LayerNorm" in n or "layer_norm" in n:
                p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def batches(name: str, seed: int = 1, n: int = 3, size: int = 4, seq: int = 12) -> list[dict]:
    """Padded on the right with the family's pad id, one short row per batch, pairs for BERT."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(5, 120, (size, seq), generator=g)
        mask = torch.ones(size, seq, dtype=torch.long)
        mask[0, seq // 2:], mask[1, seq - 2:] = 0, 0
        ids[mask == 0] = PAD[name]
        b = {"input_ids": ids, "attention_mask": mask}
        if name == "bert":
            b["token_type_ids"] = (torch.arange(seq) >= seq // 3).long().expand(size, seq).clone()
        out.append(b)
    return out


FAMILIES = ("bert", "roberta", "distilbert")


def worst_logit_diff(graph, model, name: str) -> float:
    """Largest |logit difference| between the graph in ONNX Runtime and the model, over the
    family's padded test batches."""
    sess = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    worst = 0.0
    for b in batches(name):
        with torch.no_grad():
            want = model(**b).logits.numpy()
        got = sess.run(None, {k: v.numpy() for k, v in b.items()})[0]
        worst = max(worst, float(np.abs(got - want).max()))
    return worst


@pytest.mark.parametrize("name", FAMILIES)
def test_registry_finds_six_matrices_per_layer(name):
    model = tiny(name)
    refs = bert.matrices(model)
    assert [r.kind for r in refs] == list(bert.KINDS) * 2
    assert {r.shape for r in refs} == {(48, 48), (48, 192), (192, 48)}
    state = model.state_dict()
    assert all(f"{r.name}.weight" in state for r in refs)
    assert family(model).inputs == (("input_ids", "attention_mask", "token_type_ids") if name == "bert"
                                    else ("input_ids", "attention_mask"))


@pytest.mark.parametrize("case", ["dense", "all grouped", "dropped q and k", "dropped v", "dropped ffn1"])
@pytest.mark.parametrize("name", FAMILIES)
def test_export_matches_transformers(name, case):
    model = tiny(name)
    plan = plan_with(model, CASES[case])
    repermute.apply_plan(model, plan)
    graph = build(model, plan, LinearOptions())
    assert [i.name for i in graph.graph.input] == list(family(model).inputs)
    worst = worst_logit_diff(graph, model, name)
    assert worst <= 1e-5, worst
    live = cost.kept_params(cost.live(bert.matrices(model), plan.masks()))
    assert census(graph)["encoder_weight_params"] == live
    assert trt_compat.check(graph).ok, trt_compat.check(graph).problems


@pytest.mark.parametrize("name", FAMILIES)
def test_pruning_steps_run_on_every_family(name):
    """Importance, compensation and the grouped inference module go through the registry."""
    model = tiny(name)
    data = [{**b, "labels": torch.tensor([0, 1, 2, 0])} for b in batches(name, n=2)]
    scores = importance.score(model, data, progress=False)
    assert set(scores) == {r.name for r in bert.matrices(model)}
    plan = plan_with(model, CASES["all grouped"])
    report = compensation.compensate(model, plan.masks(), data, progress=False)
    assert report and all(r["after"] <= r["before"] + 1e-9 for r in report.values())
    assert repermute.violations(model, plan) == []
    with torch.no_grad():
        want = model(**batches(name)[0]).logits
        replace_linears(model, plan)
        torch.testing.assert_close(model(**batches(name)[0]).logits, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("name", FAMILIES)
def test_every_activation_name_exports_as_transformers_computes_it(name, act):
    """The family's activation attribute read, through both places the graph uses it: layer 0's
    FFN1 dropped (the activation of b_1 folded into a constant) and layer 1's FFN1 and FFN2
    grouped (its ONNX pattern between their blocks). That each name is transformers' function
    is tests/test_activations.py's to show: at these weights the GELU variants differ by less
    than the tolerance."""
    model = tiny(name, act=act)
    plan = plan_with(model, {(0, "ffn1"): 0, (1, "ffn1"): 3, (1, "ffn2"): 2})
    repermute.apply_plan(model, plan)
    graph = build(model, plan, LinearOptions())
    worst = worst_logit_diff(graph, model, name)
    assert worst <= 1e-5, worst
    assert trt_compat.check(graph).ok, trt_compat.check(graph).problems


def test_unsupported_family_is_named():
    from transformers import GPT2Config
    with pytest.raises(UnsupportedFamily, match="unsupported architecture 'gpt2'; supported: bert, roberta"):
        family(GPT2Config())
    model = tiny("bert", act="mish")
    with pytest.raises(ExportError, match="unsupported activation 'mish'; supported: gelu, "):
        build(model, plan_with(model, {}))


@pytest.fixture(scope="module")
def sst2_like(tmp_path_factory):
    from tests.test_reliability import sentences
    root = tmp_path_factory.mktemp("glue")
    (root / "SST-2").mkdir()
    for split, n in (("train", 40), ("dev", 24)):
        rows = "".join(f"{s}\t{i % 2}\n" for i, s in enumerate(sentences(n, n)))
        (root / "SST-2" / f"{split}.tsv").write_text("sentence\tlabel\n" + rows)
    return root


@pytest.mark.parametrize("name", ["roberta", "distilbert"])
def test_prune_and_export_as_a_user_runs_them(name, sst2_like, tmp_path):
    """A RoBERTa- or DistilBERT-layout classifier through pgb-prune and pgb-export: the
    export's dev metric equals PyTorch's and its logits match within the fp32 tolerance.
    The tokenizer is the embedded MiniLM's, so the tiny model's vocabulary is its size (and
    RoBERTa's padding_idx its pad id)."""
    from transformers import AutoTokenizer

    from pgb_export import export_cli, prune_cli
    from pruning import modeldir
    from tests.test_reliability import call
    tok = AutoTokenizer.from_pretrained(modeldir.embedded_encoder())
    torch.manual_seed(0)
    if name == "roberta":
        model = RobertaForSequenceClassification(RobertaConfig(
            vocab_size=len(tok), hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96,
            # 64 rows, padding_idx 0: 63 tokens at most, so parity's length 64 must be cut to 63
            max_position_embeddings=64, pad_token_id=tok.pad_token_id, type_vocab_size=1, num_labels=2))
    else:
        model = DistilBertForSequenceClassification(DistilBertConfig(
            vocab_size=len(tok), dim=48, n_layers=2, n_heads=4, hidden_dim=96, max_position_embeddings=64,
            num_labels=2))
    model.save_pretrained(tmp_path / "dense")
    tok.save_pretrained(tmp_path / "dense")
    code, err = call(prune_cli, str(tmp_path / "dense"), "--task", "sst2", "--target", "0.5", "--out",
                     str(tmp_path / "pruned"), "--glue-dir", str(sst2_like), "--samples", "16",
                     "--finetune-epochs", "1", "--finetune-samples", "16", "--max-len", "32", "--ablation", "fixed-g",
                     *(["--distill", "0.5"] if name == "roberta" else []))
    assert code == 0, err
    code, err = call(export_cli, str(tmp_path / "pruned"), "--out", str(tmp_path / "deploy"), "--task", "sst2",
                     "--glue-dir", str(sst2_like), "--max-len", "32", "--triton")
    assert code == 0, err
    import json
    report = json.loads((tmp_path / "deploy" / "report.json").read_text())
    assert report["parity"]["ok"] and report["parity"]["max_abs_diff"] <= 1e-4
    assert max(c["seq_len"] for c in report["parity"]["checks"]) == (63 if name == "roberta" else 64)
    assert report["accuracy"]["difference_points"] <= 0.1
    assert report["graph"]["census"]["encoder_weight_params"] == report["params"]["live"] < report["params"]["total"]
    config = (tmp_path / "deploy" / "triton" / "pgb_bert" / "config.pbtxt").read_text()
    assert '"token_type_ids"' not in config and '"attention_mask"' in config


def _zero_heads_and_neurons(model, heads: dict[int, list[int]], neurons: dict[int, list[int]]) -> None:
    """Structured zeros: W_O rows of the given heads, W_2 rows of the given neurons (4 heads of
    12 features in these tiny models)."""
    refs = {(r.layer, r.kind): r for r in bert.matrices(model)}
    with torch.no_grad():
        for layer, hs in heads.items():
            w = model.get_parameter(f"{refs[(layer, 'attn_out')].name}.weight")  # (out, in)
            for h in hs:
                w[:, h * 12:(h + 1) * 12] = 0
        for layer, ns in neurons.items():
            model.get_parameter(f"{refs[(layer, 'ffn2')].name}.weight")[:, ns] = 0


@pytest.mark.parametrize("int8", [False, True], ids=["fp32", "int8"])
@pytest.mark.parametrize("name", FAMILIES)
def test_heads_and_neurons_that_add_nothing_are_sliced_out(name, int8):
    """A head with zero W_O rows and a neuron with a zero W_2 row leave the graph (the MatMuls
    shrink, the attention has fewer heads), all of them gone makes the sub-layer a constant,
    and the logits stay PyTorch's."""
    from pgb_export.bert_graph import dense_plan
    from pgb_export.exporter import graph_masks
    model = tiny(name)
    _zero_heads_and_neurons(model, {0: [1, 3], 1: [0, 1, 2, 3]}, {0: list(range(0, 192, 3)), 1: list(range(192))})
    plan = dense_plan(model)
    graph = build(model, plan, LinearOptions(int8=int8, ort_attention=int8))
    onnx_heads = [a.i for n in graph.graph.node if n.op_type == "MultiHeadAttention" for a in n.attribute
                  if a.name == "num_heads"]
    assert onnx_heads == ([2] if int8 else [])  # layer 1's attention is a constant now
    counts = census(graph)
    # layer 0: Q, K, V, O at 2 of 4 heads and the FFN at 128 of 192 neurons; layer 1: nothing
    assert counts["layers"]["layer0"]["weight_params"] == 4 * 48 * 24 + 2 * 48 * 128
    assert counts["layers"]["layer1"]["weight_params"] == 0
    assert counts["encoder_weight_params"] == cost.kept_params(cost.live(bert.matrices(model), graph_masks(model, plan)))
    worst = worst_logit_diff(graph, model, name)
    assert worst <= (BERT_IO.atol_int8 if int8 else 1e-5), worst
