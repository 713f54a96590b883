"""What the text models of the Triton repository share: the export's own tokenizer with the
export's truncation, and request strings read strictly as UTF-8. Copied beside each text
model's model.py (the python backend loads a model's directory as it is); numpy and
tokenizers only."""
import json
import os

import numpy as np
from tokenizers import Tokenizer


class BadRequest(ValueError):
    """The request cannot be answered; the message goes back to the client."""


def parameters(args) -> dict:
    config = json.loads(args["model_config"])
    return {k: v["string_value"] for k, v in config.get("parameters", {}).items()}


def tokenizer(args, params: dict, pad: bool = True, **truncation) -> Tokenizer:
    """tokenizer.json of this model's version directory, truncating at the export's max_len
    and (with `pad`) padding a batch to its longest row with the model's pad id."""
    here = os.path.join(args["model_repository"], args["model_version"])
    tok = Tokenizer.from_file(os.path.join(here, "tokenizer.json"))
    tok.enable_truncation(int(params["max_len"]), **truncation)
    if pad:
        tok.enable_padding(pad_id=int(params["pad_id"]), pad_token=params["pad_token"])
    else:
        tok.no_padding()
    return tok


def strings(tensor, name: str) -> list:
    """The rows of a [batch, 1] TYPE_STRING tensor, as str."""
    values = tensor.as_numpy().reshape(-1)
    out = []
    for i, v in enumerate(values):
        if not isinstance(v, bytes):
            v = str(v).encode()
        try:
            out.append(v.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise BadRequest(f"{name} row {i} is not valid UTF-8 (byte {e.start})") from None
    return out


def encodings_to_arrays(encodings, names) -> dict:
    fields = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}
    return {n: np.array([getattr(e, fields[n]) for e in encodings], dtype=np.int64) for n in names}
