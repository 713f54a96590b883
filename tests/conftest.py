import os
from pathlib import Path

# Triton-lang reads TRITON_INTERPRET when triton is first imported (torch may import it):
# without an NVIDIA device the kernels run in Triton's CPU interpreter.
if not Path("/dev/nvidia0").exists():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
GLUE = Path(os.environ.get("PGB_GLUE_DIR", SHARED / "data" / "glue"))
MODELS = SHARED / "models"

needs_shared = pytest.mark.skipif(not (MODELS / "minilm-sst2").is_dir() or not GLUE.is_dir(),
                                  reason="../shared (fixtures and GLUE data) is not beside this checkout")


def tiny_bert(hidden=96, layers=4, heads=4, ffn=384, labels=2, seed=0) -> BertForSequenceClassification:
    """A small random BERT whose shapes have the common divisors 1, 2, 3, 4, 6 like MiniLM's."""
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=120, hidden_size=hidden, num_hidden_layers=layers,
                     num_attention_heads=heads, intermediate_size=ffn, num_labels=labels,
                     max_position_embeddings=64, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)
    model = BertForSequenceClassification(cfg)
    with torch.no_grad():  # non-zero biases, so that "biases stay" can fail
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.1)
    return model.eval()


def random_batches(n_batches=3, batch=4, seq=12, vocab=120, labels=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        ids = torch.randint(1, vocab, (batch, seq), generator=g)
        mask = torch.ones(batch, seq, dtype=torch.long)
        mask[0, seq // 2:] = 0  # one padded row, so padding handling is exercised
        ids[0, seq // 2:] = 0
        out.append({"input_ids": ids, "attention_mask": mask,
                    "token_type_ids": torch.zeros_like(ids),
                    "labels": torch.randint(0, labels, (batch,), generator=g)})
    return out


@pytest.fixture(scope="session")
def pruned_sst2(tmp_path_factory):
    """minilm-sst2 pruned by PGB at 0.5 from 64 samples, no compensation or re-finetuning:
    a real pgb-prune-shaped directory in seconds."""
    if not (MODELS / "minilm-sst2").is_dir():
        pytest.skip("../shared/models/minilm-sst2 is not beside this checkout")
    from pruning import modeldir
    from pruning.batching import encode, make_batches
    from pruning.tasks import get_task, load_split
    from pruning import bert, budget, importance, repermute

    model, tok = modeldir.load(MODELS / "minilm-sst2")
    rows = load_split(get_task("sst2"), "train", GLUE).examples[:64]
    scores = importance.score(model, make_batches(encode(tok, rows), 32), progress=False)
    plan = budget.plan_pgb(bert.matrices(model), scores, 0.5, nperm=2)
    repermute.apply_plan(model, plan)
    out = tmp_path_factory.mktemp("pruned") / "minilm-sst2-pgb50"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    plan.save(out / "pgb.json")
    return out
