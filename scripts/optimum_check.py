"""Load an exported `onnx/` directory the way a Hugging Face user would, with optimum's
ORTModelForSequenceClassification and the transformers pipeline, and print what they give
for some sentences as JSON. Runs in its own environment (.venv-optimum: optimum-onnx pins
transformers < 4.58), so it imports nothing of this project.

    .venv-optimum/bin/python scripts/optimum_check.py DEPLOY_DIR/onnx "a sentence" "another"
"""
import json
import sys

from optimum.onnxruntime import ORTModelForSequenceClassification
from transformers import AutoTokenizer, pipeline


def main() -> None:
    directory, sentences = sys.argv[1], sys.argv[2:]
    model = ORTModelForSequenceClassification.from_pretrained(directory)
    tok = AutoTokenizer.from_pretrained(directory)
    enc = tok(sentences, padding=True, return_tensors="np")
    logits = model(**{k: v for k, v in enc.items() if k in model.input_names}).logits
    labels = [r["label"] for r in pipeline("text-classification", model=model, tokenizer=tok)(sentences)]
    print(json.dumps({"inputs": list(model.input_names), "logits": logits.tolist(), "labels": labels,
                      "tokens": enc["input_ids"].tolist()}))


if __name__ == "__main__":
    main()
