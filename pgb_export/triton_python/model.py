"""Triton python-backend model that runs ONNX Runtime on the model.onnx beside it.

For servers without the onnxruntime backend (the tritonserver in the nvidia-pytriton wheel
has only the python backend); the stock onnxruntime backend serves the same model.onnx.
"""
import json
import os

import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.inputs = [i["name"] for i in config["input"]]
        self.output = config["output"][0]["name"]
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(os.environ.get("PGB_ORT_THREADS", "2"))
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def execute(self, requests):
        responses = []
        for request in requests:
            feeds = {n: pb_utils.get_input_tensor_by_name(request, n).as_numpy() for n in self.inputs}
            logits = self.session.run([self.output], feeds)[0]
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(self.output, logits)]))
        return responses
