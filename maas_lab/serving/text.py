"""Sentences to token ids for a served text model, one request at a time.

The server tokenizes on its event loop, so the cost per request matters: a transformers
tokenizer call spends most of its ~0.3 ms in Python around the Rust tokenizer. Where the
version's tokenizer is a fast one, we call its Rust core directly (same vocabulary,
normalizer and special tokens, so the same ids) and pad here.
"""

from __future__ import annotations

import numpy as np

MAX_TOKENS = 256  # what sentence-transformers keeps for MiniLM


class TextInput:
    def __init__(self, tokenizer, names: list[str], max_length: int = MAX_TOKENS):
        self.tokenizer, self.names, self.max_length = tokenizer, names, max_length
        self.core = None
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is not None:
            from tokenizers import Tokenizer

            core = Tokenizer.from_str(backend.to_str())  # a private copy: settings are ours
            core.enable_truncation(max_length)
            core.no_padding()
            self.core = core
            self.pad_id = int(getattr(tokenizer, "pad_token_id", 0) or 0)

    def __call__(self, texts: list[str]) -> dict[str, np.ndarray]:
        if self.core is None:
            from ..evaluation import tokenize

            return tokenize(self.tokenizer, texts, self.names, max_length=self.max_length)
        encodings = [self.core.encode(t) for t in texts]
        longest = max(len(e.ids) for e in encodings)
        ids = np.full((len(texts), longest), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(texts), longest), dtype=np.int64)
        types = np.zeros((len(texts), longest), dtype=np.int64)
        for i, e in enumerate(encodings):
            n = len(e.ids)
            ids[i, :n], mask[i, :n], types[i, :n] = e.ids, e.attention_mask, e.type_ids
        columns = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        return {name: columns[name] for name in self.names if name in columns}
