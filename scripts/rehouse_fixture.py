"""A BERT-layout fixture (../shared/models/minilm-*) re-housed in the RoBERTa or DistilBERT
layout, for real-weight checks of those families where no pretrained RoBERTa or DistilBERT
weights can be had.

- roberta: the same function for single-segment inputs. Position rows shift by
  padding_idx + 1 (RoBERTa counts positions from there), token type 0 is RoBERTa's single
  token type, BERT's pooler + classifier become RoBERTa's dense -> tanh -> out_proj head.
- distilbert: token type 0 is folded into the position rows (DistilBERT has no token types);
  the encoder is the same; DistilBERT's head (pre_classifier -> ReLU -> classifier) cannot
  compute BERT's tanh pooler, so it starts from BERT's weights and is re-fitted on the
  first-token features of training rows, encoder frozen.
The tokenizer stays the fixture's (WordPiece, pad id 0, so RoBERTa's padding_idx is 0).

    .venv/bin/python scripts/rehouse_fixture.py ../shared/models/minilm-sst2 roberta runs/minilm-sst2-roberta
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pruning import modeldir  # noqa: E402
from pruning.batching import encode, evaluate, make_batches  # noqa: E402
from pruning.tasks import fixture_task, glue_dir, load_split  # noqa: E402


def to_roberta(bert):
    from transformers import RobertaConfig, RobertaForSequenceClassification
    c, sd = bert.config, bert.state_dict()
    pad = c.pad_token_id
    cfg = RobertaConfig(vocab_size=c.vocab_size, hidden_size=c.hidden_size, num_hidden_layers=c.num_hidden_layers,
                        num_attention_heads=c.num_attention_heads, intermediate_size=c.intermediate_size,
                        hidden_act=c.hidden_act, max_position_embeddings=c.max_position_embeddings + pad + 1,
                        type_vocab_size=1, layer_norm_eps=c.layer_norm_eps, pad_token_id=pad,
                        num_labels=c.num_labels, id2label=c.id2label, label2id=c.label2id)
    model = RobertaForSequenceClassification(cfg).eval()
    new = {k.replace("bert.", "roberta.", 1): v for k, v in sd.items() if k.startswith("bert.") and ".pooler." not in k}
    positions = torch.zeros(cfg.max_position_embeddings, c.hidden_size)
    positions[pad + 1:] = sd["bert.embeddings.position_embeddings.weight"]
    new["roberta.embeddings.position_embeddings.weight"] = positions
    new["roberta.embeddings.token_type_embeddings.weight"] = sd["bert.embeddings.token_type_embeddings.weight"][:1]
    new.pop("roberta.embeddings.position_ids", None)
    new.pop("roberta.embeddings.token_type_ids", None)
    new.update({"classifier.dense.weight": sd["bert.pooler.dense.weight"], "classifier.dense.bias": sd["bert.pooler.dense.bias"],
                "classifier.out_proj.weight": sd["classifier.weight"], "classifier.out_proj.bias": sd["classifier.bias"]})
    missing, unexpected = model.load_state_dict(new, strict=False)
    assert not unexpected and all("position_ids" in k or "token_type_ids" in k for k in missing), (missing, unexpected)
    return model


DISTIL_NAMES = {"attention.self.query": "attention.q_lin", "attention.self.key": "attention.k_lin",
                "attention.self.value": "attention.v_lin", "attention.output.dense": "attention.out_lin",
                "attention.output.LayerNorm": "sa_layer_norm", "intermediate.dense": "ffn.lin1",
                "output.dense": "ffn.lin2", "output.LayerNorm": "output_layer_norm"}


def to_distilbert(bert):
    from transformers import DistilBertConfig, DistilBertForSequenceClassification
    c, sd = bert.config, bert.state_dict()
    cfg = DistilBertConfig(vocab_size=c.vocab_size, dim=c.hidden_size, n_layers=c.num_hidden_layers,
                           n_heads=c.num_attention_heads, hidden_dim=c.intermediate_size, activation=c.hidden_act,
                           max_position_embeddings=c.max_position_embeddings, pad_token_id=c.pad_token_id,
                           num_labels=c.num_labels, id2label=c.id2label, label2id=c.label2id)
    model = DistilBertForSequenceClassification(cfg).eval()
    emb = "bert.embeddings."
    new = {"distilbert.embeddings.word_embeddings.weight": sd[emb + "word_embeddings.weight"],
           "distilbert.embeddings.position_embeddings.weight":
               sd[emb + "position_embeddings.weight"] + sd[emb + "token_type_embeddings.weight"][0],
           "distilbert.embeddings.LayerNorm.weight": sd[emb + "LayerNorm.weight"],
           "distilbert.embeddings.LayerNorm.bias": sd[emb + "LayerNorm.bias"],
           "pre_classifier.weight": sd["bert.pooler.dense.weight"], "pre_classifier.bias": sd["bert.pooler.dense.bias"],
           "classifier.weight": sd["classifier.weight"], "classifier.bias": sd["classifier.bias"]}
    for k, v in sd.items():
        if k.startswith("bert.encoder.layer."):
            i, rest = k[len("bert.encoder.layer."):].split(".", 1)
            path, leaf = rest.rsplit(".", 1)
            new[f"distilbert.transformer.layer.{i}.{DISTIL_NAMES[path]}.{leaf}"] = v
    missing, unexpected = model.load_state_dict(new, strict=False)
    assert not unexpected and all("position_ids" in k for k in missing), (missing, unexpected)
    return model


def refit_head(model, tok, train, rows: int, seed: int) -> None:
    """Fit pre_classifier -> ReLU -> classifier on frozen first-token features."""
    rng = random.Random(seed)
    batches = make_batches(encode(tok, rng.sample(train, min(rows, len(train))), 64, ("input_ids", "attention_mask")), 64)
    feats, labels = [], []
    with torch.no_grad():
        for b in batches:
            hidden = model.distilbert(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state
            feats.append(hidden[:, 0])
            labels.append(b["labels"])
    x, y = torch.cat(feats), torch.cat(labels)
    head = [model.pre_classifier, model.classifier]
    opt = torch.optim.Adam([p for m in head for p in m.parameters()], lr=1e-3)
    torch.manual_seed(seed)
    for _ in range(300):
        idx = torch.randint(0, len(x), (256,))
        loss = torch.nn.functional.cross_entropy(model.classifier(torch.relu(model.pre_classifier(x[idx]))), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("fixture")
    p.add_argument("family", choices=("roberta", "distilbert"))
    p.add_argument("out")
    p.add_argument("--refit-rows", type=int, default=8000, help="training rows for DistilBERT's head (default 8000)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    bert, tok = modeldir.load(args.fixture)
    task = fixture_task(args.fixture)
    data = glue_dir(None)
    dev = load_split(task, "dev", data).examples
    model = to_roberta(bert) if args.family == "roberta" else to_distilbert(bert)
    if args.family == "distilbert":
        refit_head(model, tok, load_split(task, "train", data).examples, args.refit_rows, args.seed)
    model.eval()
    inputs = ("input_ids", "attention_mask")
    dev_batches = make_batches(encode(tok, dev, 128, inputs), 64)
    report = {"family": args.family, "task": task.name,
              "bert": evaluate(bert, task, make_batches(encode(tok, dev, 128), 64)),
              args.family: evaluate(model, task, dev_batches)}
    with modeldir.atomic_dir(args.out, force=True, inputs=[args.fixture]) as tmp:
        model.save_pretrained(tmp)
        modeldir.save_tokenizer(tok, tmp)
        (tmp / "fixture.json").write_text(json.dumps({"task": task.name, "rehoused_from": args.fixture}, indent=1))
        (tmp / "report.json").write_text(json.dumps({"model_dir": args.fixture, **report}, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
