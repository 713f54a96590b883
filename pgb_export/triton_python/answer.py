"""Triton python-backend model pgb_qa: `question` + `context` -> `answer` and `score`. The
context is cut into the same overlapping windows as the export's dev metric, pgb_bert scores
them (called in-process through the python backend's BLS), and the best span is decoded by
the same code (spans.py, copied beside this file). Windows change the batch size, which an
ensemble step cannot do; that is why this is one model and not an ensemble."""
import json

import numpy as np
import triton_python_backend_utils as pb_utils

from spans import best_span
from textio import BadRequest, encodings_to_arrays, parameters, strings, tokenizer


class TritonPythonModel:
    def initialize(self, args):
        params = parameters(args)
        self.max_question = int(params["max_question_tokens"])
        self.max_batch = int(params["model_max_batch"])
        self.allow_no_answer = params["allow_no_answer"] == "true"
        self.inputs = json.loads(params["model_inputs"])
        self.pad_id, self.pad_token = int(params["pad_id"]), params["pad_token"]
        max_len = int(params["max_len"])
        self.tok = tokenizer(args, params, pad=False, stride=min(int(params["doc_stride"]), max_len // 2),
                             strategy="only_second")
        self.questions = tokenizer(args, params, pad=False)
        self.questions.no_truncation()

    def _cut(self, question: str) -> str:
        offsets = self.questions.encode(question, add_special_tokens=False).offsets
        return question if len(offsets) <= self.max_question else question[:offsets[self.max_question - 1][1]]

    def _logits(self, arrays: dict) -> tuple:
        request = pb_utils.InferenceRequest(model_name="pgb_bert", requested_output_names=["start_logits", "end_logits"],
                                            inputs=[pb_utils.Tensor(n, arrays[n]) for n in self.inputs])
        response = request.exec()
        if response.has_error():
            raise BadRequest(response.error().message())
        return tuple(pb_utils.get_output_tensor_by_name(response, n).as_numpy() for n in ("start_logits", "end_logits"))

    def _answer(self, question: str, context: str) -> tuple:
        try:
            first = self.tok.encode(self._cut(question), context)
        except Exception as e:  # tokenizers raises its own exception types
            raise BadRequest(f"cannot tokenize the question and context: {e}") from None
        windows = [first] + list(first.overflowing)
        decoded = []
        for at in range(0, len(windows), self.max_batch):
            chunk = windows[at:at + self.max_batch]
            width = max(len(w.ids) for w in chunk)
            for w in chunk:
                w.pad(width, pad_id=self.pad_id, pad_token=self.pad_token)
            start, end = self._logits(encodings_to_arrays(chunk, self.inputs))
            for w, s, e in zip(chunk, start, end):
                offsets = [tuple(o) if seq == 1 else None for o, seq in zip(w.offsets, w.sequence_ids)]
                decoded.append((s, e, offsets))
        return best_span(context, decoded, self.allow_no_answer)

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                questions = strings(pb_utils.get_input_tensor_by_name(request, "question"), "question")
                contexts = strings(pb_utils.get_input_tensor_by_name(request, "context"), "context")
                results = [self._answer(q, c) for q, c in zip(questions, contexts)]
                answer = np.array([[a.encode()] for a, _ in results], dtype=np.object_)
                score = np.array([[s] for _, s in results], dtype=np.float32)
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("answer", answer),
                                                             pb_utils.Tensor("score", score)]))
            except BadRequest as e:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(e))))
        return responses
