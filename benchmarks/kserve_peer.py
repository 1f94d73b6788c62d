"""KServe's own ``ModelServer`` serving MiniLM int8 ONNX: the reference Python server of the
Open Inference Protocol v2, as a peer row of ``benchmarks/serving_engines.py``.

Runs in a venv of its own (``.venv-kserve``: ``pip install kserve onnxruntime tokenizers
numpy``), never in ``.venv``: kserve pins an older psutil and pulls the kubernetes client.
So this file imports nothing from maas_lab; it is started by the benchmark as
``.venv-kserve/bin/python benchmarks/kserve_peer.py --model-dir DIR --port N``.

The work per request is the one our server does (``maas_lab/serving/text.py``,
``plugins/maas_onnx/runner.py``): the ``text`` BYTES input of an OIP v2 request, tokenized
with the version's ``tokenizer.json`` through the Rust ``tokenizers`` core (truncation at 256
tokens, padded to the longest with ``[PAD]``), one onnxruntime run of the same int8 file
(same session options: ``intra_op_num_threads``, CPU provider) whose graph already mean-pools
into ``sentence_embedding``, and that output as a JSON FP32 tensor. ``predict`` is a plain
function, as KServe's own examples and model servers write it: KServe calls it on its event
loop, one request at a time (KServe's Python server has no dynamic batching). The per-request
latency log and the access log are off, as ours has none.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

MAX_TOKENS = 256
MODEL_NAME = "minilm"


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", required=True, help="the checkout: model.onnx, tokenizer")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    parser.add_argument("--name", default=MODEL_NAME, help="the model's name in the routes")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse(argv)
    sys.argv = sys.argv[:1]  # kserve parses the command line when imported: give it none
    import numpy as np
    import onnxruntime as ort
    from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer
    from kserve.utils.utils import generate_uuid
    from tokenizers import Tokenizer

    class MiniLM(Model):
        def __init__(self, name: str, folder: Path, threads: int):
            super().__init__(name)
            self.folder, self.threads = folder, threads

        def load(self) -> bool:
            so = ort.SessionOptions()
            so.intra_op_num_threads = self.threads
            (onnx,) = self.folder.glob("*.onnx")
            self.session = ort.InferenceSession(str(onnx), so, providers=["CPUExecutionProvider"])
            self.names = [i.name for i in self.session.get_inputs()]
            tok = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
            tok.enable_truncation(MAX_TOKENS)
            tok.no_padding()
            self.tokenizer = tok
            self.pad_id = tok.token_to_id("[PAD]") or 0
            self.ready = True
            return self.ready

        def predict(self, payload: InferRequest, headers=None) -> InferResponse:
            texts = payload.inputs[0].data
            texts = [t.decode() if isinstance(t, bytes) else str(t) for t in texts]
            encodings = self.tokenizer.encode_batch(texts) if len(texts) > 1 else None
            encodings = encodings or [self.tokenizer.encode(texts[0])]
            longest = max(len(e.ids) for e in encodings)
            ids = np.full((len(texts), longest), self.pad_id, dtype=np.int64)
            mask = np.zeros((len(texts), longest), dtype=np.int64)
            types = np.zeros((len(texts), longest), dtype=np.int64)
            for i, e in enumerate(encodings):
                n = len(e.ids)
                ids[i, :n], mask[i, :n], types[i, :n] = e.ids, e.attention_mask, e.type_ids
            columns = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            feeds = {name: columns[name] for name in self.names}
            (emb,) = self.session.run(["sentence_embedding"], feeds)
            out = InferOutput("sentence_embedding", list(emb.shape), "FP32")
            out.set_data_from_numpy(emb.astype(np.float32), binary_data=False)
            return InferResponse(payload.id or generate_uuid(), self.name, [out])

    model = MiniLM(args.name, Path(args.model_dir), args.threads)
    model.load()
    logging.getLogger().setLevel(logging.WARNING)
    server = ModelServer(
        http_port=args.port,
        enable_grpc=False,
        workers=1,  # more would pickle the model (its onnxruntime session) into each worker
        enable_latency_logging=False,
        enable_docs_url=False,
    )
    for name in ("kserve", "uvicorn", "uvicorn.access", "uvicorn.error", "kserve.trace"):
        logging.getLogger(name).setLevel(logging.WARNING)
    server.start([model])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
