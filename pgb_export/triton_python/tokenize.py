"""Triton python-backend model pgb_tokenize: `text` (and optional `text_pair`) -> the token
ids pgb_bert takes, with the export's tokenizer and truncation. The first step of the
pgb_text ensemble."""
import json

import triton_python_backend_utils as pb_utils

from textio import BadRequest, encodings_to_arrays, parameters, strings, tokenizer


class TritonPythonModel:
    def initialize(self, args):
        self.tok = tokenizer(args, parameters(args))
        self.outputs = [o["name"] for o in json.loads(args["model_config"])["output"]]

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                texts = strings(pb_utils.get_input_tensor_by_name(request, "text"), "text")
                pair = pb_utils.get_input_tensor_by_name(request, "text_pair")
                if pair is not None:
                    pairs = strings(pair, "text_pair")
                    if len(pairs) != len(texts):
                        raise BadRequest(f"text has {len(texts)} rows but text_pair {len(pairs)}")
                    encodings = self.tok.encode_batch(list(zip(texts, pairs)))
                else:
                    encodings = self.tok.encode_batch(texts)
                arrays = encodings_to_arrays(encodings, self.outputs)
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(n, arrays[n]) for n in self.outputs]))
            except BadRequest as e:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(e))))
        return responses
