"""Sentences to token ids in Triton's Python backend: written by ``maas export-repo`` as
``<name>_tokenizer/1/model.py`` beside the version's own ``tokenizer.json``.

It runs what ``maas serve`` runs for a text model (maas_lab/serving/text.py): the Rust
``tokenizers`` pipeline from the version's tokenizer.json, truncated to ``max_length``
tokens, padded to the longest sentence of the request with ``pad_id``; the attention mask
and token type ids come from the same encoding. Triton's Python environment needs the
``tokenizers`` package (``pip install tokenizers`` in the image). Nothing here is imported
by maas_lab itself: it is a file of the repository it writes.
"""

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils
from tokenizers import Tokenizer


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        here = os.path.join(args["model_repository"], args["model_version"])
        self.tokenizer = Tokenizer.from_file(os.path.join(here, "tokenizer.json"))
        self.tokenizer.enable_truncation(int(params["max_length"]))
        self.tokenizer.no_padding()
        self.pad_id = int(params["pad_id"])
        self.outputs = [o["name"] for o in config["output"]]

    def execute(self, requests):
        responses = []
        for request in requests:
            text = pb_utils.get_input_tensor_by_name(request, "text").as_numpy().reshape(-1)
            sentences = [t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in text]
            encodings = self.tokenizer.encode_batch(sentences)
            longest = max((len(e.ids) for e in encodings), default=0)
            rows = len(sentences)
            columns = {
                "input_ids": np.full((rows, longest), self.pad_id, dtype=np.int64),
                "attention_mask": np.zeros((rows, longest), dtype=np.int64),
                "token_type_ids": np.zeros((rows, longest), dtype=np.int64),
            }
            for i, e in enumerate(encodings):
                n = len(e.ids)
                columns["input_ids"][i, :n] = e.ids
                columns["attention_mask"][i, :n] = e.attention_mask
                columns["token_type_ids"][i, :n] = e.type_ids
            tensors = [pb_utils.Tensor(name, columns[name]) for name in self.outputs]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses
