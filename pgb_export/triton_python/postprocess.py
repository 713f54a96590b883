"""Triton python-backend model pgb_postprocess: logits -> `label` (the model's id2label name,
or for regression the score as text) and `scores` (softmax probabilities; for regression the
raw score). The last step of the pgb_text ensemble."""
import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        params = {k: v["string_value"] for k, v in json.loads(args["model_config"]).get("parameters", {}).items()}
        self.labels = json.loads(params["labels"])  # class names in index order; [] = regression

    def execute(self, requests):
        responses = []
        for request in requests:
            logits = pb_utils.get_input_tensor_by_name(request, "logits").as_numpy().astype(np.float32)
            if self.labels:
                shifted = np.exp(logits - logits.max(-1, keepdims=True))
                scores = shifted / shifted.sum(-1, keepdims=True)
                names = [self.labels[i] for i in scores.argmax(-1)]
            else:
                scores, names = logits, [f"{v:.6g}" for v in logits[:, 0]]
            label = np.array([[n.encode()] for n in names], dtype=np.object_)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("label", label),
                                                         pb_utils.Tensor("scores", scores.astype(np.float32))]))
        return responses
