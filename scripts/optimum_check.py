"""Load an exported `onnx/` directory the way a Hugging Face user would, with optimum's
ORTModelFor... class of its head and the transformers pipeline, and print what they give as
JSON. Runs in its own environment (.venv-optimum: optimum-onnx pins transformers < 4.58), so
it imports nothing of this project.

    .venv-optimum/bin/python scripts/optimum_check.py DEPLOY_DIR/onnx "a sentence" "another"

A question-answering export takes its texts as question/context pairs: "question|context".
"""
import json
import sys
from pathlib import Path

from optimum.onnxruntime import ORTModelForQuestionAnswering, ORTModelForSequenceClassification
from transformers import AutoTokenizer, pipeline


def main() -> None:
    directory, texts = sys.argv[1], sys.argv[2:]
    architectures = json.loads((Path(directory) / "config.json").read_text()).get("architectures") or [""]
    qa = architectures[0].endswith("ForQuestionAnswering")
    model = (ORTModelForQuestionAnswering if qa else ORTModelForSequenceClassification).from_pretrained(directory)
    tok = AutoTokenizer.from_pretrained(directory)
    if qa:
        pairs = [t.split("|", 1) for t in texts]
        enc = tok([q for q, _ in pairs], [c for _, c in pairs], padding=True, return_tensors="np")
        out = model(**{k: v for k, v in enc.items() if k in model.input_names})
        answers = pipeline("question-answering", model=model, tokenizer=tok)(
            question=[q for q, _ in pairs], context=[c for _, c in pairs])
        result = {"outputs": {"start_logits": out.start_logits.tolist(), "end_logits": out.end_logits.tolist()},
                  "answers": [a["answer"] for a in (answers if isinstance(answers, list) else [answers])]}
    else:
        enc = tok(texts, padding=True, return_tensors="np")
        logits = model(**{k: v for k, v in enc.items() if k in model.input_names}).logits
        result = {"outputs": {"logits": logits.tolist()},
                  "labels": [r["label"] for r in pipeline("text-classification", model=model, tokenizer=tok)(texts)]}
    print(json.dumps({"inputs": list(model.input_names), "tokens": enc["input_ids"].tolist(), **result}))


if __name__ == "__main__":
    main()
