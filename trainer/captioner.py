"""Caption decoder: a head that writes a sentence about a clip by cross-attending to VideoBERT's video states.

Two decoders fit behind one interface, both Hugging Face causal language models with cross-attention, fed the
video-only hidden states `[CLS] video [SEP]` of `VideoBertModel.video_states` as `encoder_hidden_states`:

- `bert`: `BertLMHeadModel` (`is_decoder=True, add_cross_attention=True`) whose self-attention, feed-forward and
  embedding weights start from the text encoder VideoBERT started from (MiniLM); only cross-attention and the
  token head start at random.
- `bart`: `BartForCausalLM`, i.e. BART's decoder (`BartDecoder`), at the same width, started at random (no BART
  weights ship offline).

Both use the text encoder's tokenizer: `[CLS]` starts a caption and `[SEP]` ends it. The language model is its
own `PreTrainedModel`, saved in a subfolder of the model dir with its own config.json, model.safetensors and
generation_config.json (beam search settings).

The memory the decoder cross-attends to can also hold the clip's continuous frame features, projected to the
decoder's width (`FrameMemory`), after the video states: VideoBERT's states are shaped by its retrieval and
masked-frame objectives, and what those objectives leave faint (colour, above all) the raw features still carry.
A `Captioner` is the language model plus that optional projection. This module is pure torch: no files, no
training loop.
"""
from __future__ import annotations

import re

import torch

from . import losses

KINDS = ("bert", "bart")
CAPTIONER_DIR = "captioner"          # subfolder of a model dir holding the decoder
# Beam search defaults, saved in generation_config.json: n-grams are never repeated (a sentence, not a bag
# of repeated words), and a mild length penalty keeps beams from stopping at the shortest fragment.
GENERATION = {"num_beams": 4, "max_length": 32, "no_repeat_ngram_size": 3, "length_penalty": 1.0,
              "early_stopping": True}


def decoder_config(kind: str, video_config, bos: int, eos: int, pad: int, text_config=None, **overrides):
    """The HF config of a caption decoder as wide as VideoBERT's hidden states.

    text_config: the BertConfig of the text model a `bert` decoder starts from (its shape is kept);
    overrides: further config fields (e.g. num_hidden_layers / decoder_layers for tiny test models).
    """
    from transformers import BartConfig, BertConfig

    if kind not in KINDS:
        raise ValueError(f"captioner kind={kind!r}: choose from {KINDS}")
    h = video_config.hidden_size
    special = {"bos_token_id": bos, "eos_token_id": eos, "pad_token_id": pad, "decoder_start_token_id": bos}
    if kind == "bert":
        base = text_config.to_dict() if text_config is not None else video_config.bert_config().to_dict()
        for key in ("architectures", "model_type", "transformers_version", "_name_or_path"):
            base.pop(key, None)
        base.update(vocab_size=video_config.vocab_size, hidden_size=h, is_decoder=True, add_cross_attention=True,
                    **special, **overrides)
        return BertConfig(**base)
    layers = overrides.pop("decoder_layers", video_config.num_hidden_layers)
    heads = overrides.pop("decoder_attention_heads", max(1, h // 64))
    return BartConfig(vocab_size=video_config.vocab_size, d_model=h, decoder_layers=layers, encoder_layers=0,
                      decoder_attention_heads=heads, decoder_ffn_dim=4 * h, max_position_embeddings=128,
                      dropout=0.1, is_decoder=True, is_encoder_decoder=False, scale_embedding=True,
                      **special, **overrides)


class FrameMemory(torch.nn.Module):
    """Per-frame features (B, T, F) -> (B, T, H) memory slots: LayerNorm, a linear map and a learned frame
    position (cross-attention alone cannot tell the frames' order, which motion needs).

    With `colour_dim`, the last `colour_dim` values of each frame's features (the frame encoder's colour
    histograms) get slots of their own, (B, 2T, H) in all, with their own norm and map: folded into one slot
    with thousands of network features, colour is one faint direction among many, and a decoder trained on a
    few hundred clips learns to read each clip's colour off the look of the shape it was seen with instead.

    With `colour_cells` > 1, the colour histograms are that many equal blocks (the whole frame's and each grid
    cell's, trainer.encoders.colour), each a slot of its own with a learned cell position: which colour is
    where, so that two objects' colours can be told apart. The network's features stay one slot per frame,
    which keeps motion legible (BENCHMARKS.md, "Captioning": in cell slots too, they raised shape but motion fell
    from 0.908 to 0.633).

    With `cell_looks`, each colour slot also carries the network's features of the same block (the whole frame's
    pool, or a grid cell's), with their own norm and map: a cell's shape and colour in one slot, so that the
    decoder can tell which shape is which colour. Before they are read, the directions in which those features
    covary with the colour histograms over the training clips are projected out (`fit_eraser`, least-squares
    concept erasure): left in, the decoder learns each training clip's colour from its cells' look and names an
    unseen yellow star orange (BENCHMARKS.md, "Captioning", "What each grid cell looks like")."""

    def __init__(self, feature_dim: int, hidden: int, max_frames: int, colour_dim: int = 0, colour_cells: int = 1,
                 cell_looks: bool = False):
        super().__init__()
        if not 0 <= colour_dim < feature_dim:
            raise ValueError(f"colour_dim must be in [0, {feature_dim}), got {colour_dim}")
        if colour_cells < 1 or colour_dim % colour_cells:
            raise ValueError(f"colour_cells={colour_cells} must divide the colour histograms ({colour_dim})")
        self.colour_dim, self.colour_cells = int(colour_dim), int(colour_cells)
        self.norm = torch.nn.LayerNorm(feature_dim - self.colour_dim)
        self.proj = torch.nn.Linear(feature_dim - self.colour_dim, hidden)
        self.position = torch.nn.Embedding(max_frames, hidden)
        if self.colour_dim:
            self.colour_norm = torch.nn.LayerNorm(self.colour_dim // self.colour_cells)
            self.colour_proj = torch.nn.Linear(self.colour_dim // self.colour_cells, hidden)
            if self.colour_cells > 1:
                self.cell = torch.nn.Embedding(self.colour_cells, hidden)
        self.cell_looks = bool(cell_looks)
        if self.cell_looks:
            if not self.colour_dim or (feature_dim - self.colour_dim) % self.colour_cells:
                raise ValueError(f"cell_looks needs colour histograms whose {self.colour_cells} blocks divide the "
                                 f"network features ({feature_dim - self.colour_dim})")
            look, bins = (feature_dim - self.colour_dim) // self.colour_cells, self.colour_dim // self.colour_cells
            self.look_norm = torch.nn.LayerNorm(look)
            self.look_proj = torch.nn.Linear(look, hidden)
            # The erased directions (orthonormal columns; zero columns erase nothing) and the mean they are
            # measured from, set by fit_eraser and saved with the weights.
            self.register_buffer("look_erase", torch.zeros(look, bins))
            self.register_buffer("look_mean", torch.zeros(look))

    def forward(self, features: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        b, t = features.shape[:2]
        frame = torch.arange(t, device=features.device).clamp(max=self.position.num_embeddings - 1)
        where = self.position(frame)                                       # (T, H)
        features = features.to(self.proj.weight.dtype)
        slots = self.proj(self.norm(features[..., :features.shape[-1] - self.colour_dim])) + where
        if self.colour_dim:
            colour = features[..., -self.colour_dim:].reshape(b, t, self.colour_cells, -1)
            place = where[:, None] + (self.cell.weight[None] if self.colour_cells > 1 else 0)  # (T, cells, H)
            colour = self.colour_proj(self.colour_norm(colour)) + place
            if self.cell_looks:
                colour = colour + self.look_proj(self.look_norm(self._looks(features)))
            colour = colour.reshape(b, t * self.colour_cells, -1)
            slots = torch.cat([slots, colour], 1)                          # (B, T + T * cells, H)
        return slots * self.slot_mask(frame_mask).unsqueeze(-1).to(slots.dtype)

    def _blocks(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(..., F) frame features -> each block's network features (..., cells, look) and colour histogram
        (..., cells, bins)."""
        cut, shape = features.shape[-1] - self.colour_dim, (*features.shape[:-1], self.colour_cells, -1)
        return features[..., :cut].reshape(shape), features[..., cut:].reshape(shape)

    def _looks(self, features: torch.Tensor) -> torch.Tensor:
        """(..., F) frame features -> (..., cells, look) network features of each block, colour erased."""
        looks = self._blocks(features)[0]
        return looks - ((looks - self.look_mean) @ self.look_erase) @ self.look_erase.T

    @torch.no_grad()
    def fit_eraser(self, features: torch.Tensor) -> int:
        """Set the directions `cell_looks` erases from the training frames' features (n, F): those spanned by the
        cross-covariance of each block's network features with its colour histogram, so that no linear read of
        what is left predicts colour. Returns how many directions are erased (0 without `cell_looks`)."""
        if not self.cell_looks or not len(features):
            return 0
        looks, colour = (x.flatten(0, 1) for x in self._blocks(features.to(self.look_mean.device, torch.float32)))
        mean = looks.mean(0)
        cov = (looks - mean).T @ (colour - colour.mean(0)) / len(looks)
        basis, strength, _ = torch.linalg.svd(cov.double(), full_matrices=False)
        keep = strength > strength[0] * 1e-6   # none when nothing covaries
        erase = torch.zeros_like(self.look_erase)
        erase[:, :int(keep.sum())] = basis[:, keep].to(erase.dtype)
        self.look_erase.copy_(erase)
        self.look_mean.copy_(mean)
        return int(keep.sum())

    def slot_mask(self, frame_mask: torch.Tensor) -> torch.Tensor:
        """(B, T) frame mask -> the mask of this memory's slots."""
        if not self.colour_dim:
            return frame_mask
        return torch.cat([frame_mask, frame_mask.repeat_interleave(self.colour_cells, dim=1)], 1)


class Captioner(torch.nn.Module):
    """The caption language model (`lm`, a Hugging Face causal LM with cross-attention) and, when its config
    says `frame_memory`, the projection of frame features it also attends to."""

    def __init__(self, lm, frames: FrameMemory | None = None):
        super().__init__()
        self.lm = lm
        self.frames = frames

    @property
    def config(self):
        return self.lm.config

    @property
    def generation_config(self):
        return self.lm.generation_config

    @property
    def dtype(self) -> torch.dtype:
        return self.lm.dtype

    def memory(self, states: torch.Tensor, state_mask: torch.Tensor, features: torch.Tensor | None = None,
               frame_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """What the decoder cross-attends to: the video states (B, S, H), then, with a frame memory, the
        projected frame features (B, T, F); and its mask."""
        states = states.to(self.dtype)
        if self.frames is None:
            return states, state_mask
        if features is None or frame_mask is None:
            raise ValueError("this caption decoder also reads the frame features: pass features and frame_mask")
        slots = self.frames(features, frame_mask.bool()).to(self.dtype)
        return torch.cat([states, slots], 1), torch.cat([state_mask.bool(), self.frames.slot_mask(frame_mask.bool())], 1)

    def colour_slots(self, frames: int) -> int:
        """How many of `memory`'s slots, for clips of `frames` frames, are colour slots (the last ones); 0 for a
        decoder without them."""
        return frames * self.frames.colour_cells if self.frames is not None and self.frames.colour_dim else 0

    def colour_only(self, memory_mask: torch.Tensor, frames: int, rows: torch.Tensor) -> torch.Tensor:
        """`memory`'s mask for clips of `frames` frames, with every slot but the colour slots (`colour_slots`)
        hidden in the clips `rows` (B,) bool."""
        colour = self.colour_slots(frames)
        if not colour:
            raise ValueError("this caption decoder's memory has no colour slots")
        mask = memory_mask.clone()
        mask[rows, :mask.shape[1] - colour] = False
        return mask


def frame_memory_spec(feature_dim: int, max_frames: int, colour_dim: int = 0, colour_cells: int = 1,
                      cell_looks: bool = False) -> dict:
    """The `frame_memory` config field of a decoder that also reads frame features (the last `colour_dim` of
    them colour histograms, `colour_cells` blocks read in a slot each; with `cell_looks`, each block's network
    features in the same slot)."""
    spec = {"feature_dim": int(feature_dim), "max_frames": int(max_frames)}
    if not colour_dim:
        return spec
    spec.update(colour_dim=int(colour_dim), colour_cells=int(colour_cells))
    return {**spec, "cell_looks": True} if cell_looks else spec


def new_captioner(config, text_state: dict | None = None) -> Captioner:
    """A decoder for `config` (from `decoder_config`); `text_state`, a BertModel state dict, seeds a `bert`
    decoder's shared weights (cross-attention and the token head stay at their random start). A config with
    `frame_memory` (from `frame_memory_spec`) gets a frame projection too."""
    return Captioner(new_language_model(config, text_state), new_frame_memory(config))


def new_frame_memory(config) -> FrameMemory | None:
    """The frame projection `config.frame_memory` describes, or None."""
    spec = getattr(config, "frame_memory", None)
    if not spec:
        return None
    return FrameMemory(spec["feature_dim"], config.hidden_size if config.model_type == "bert" else config.d_model,
                       spec["max_frames"], spec.get("colour_dim", 0), spec.get("colour_cells", 1),
                       spec.get("cell_looks", False))


def new_language_model(config, text_state: dict | None = None):
    """The Hugging Face causal LM of a caption decoder, with its beam search settings."""
    from transformers import BartForCausalLM, BertLMHeadModel, GenerationConfig

    model = BertLMHeadModel(config) if config.model_type == "bert" else BartForCausalLM(config)
    if text_state is not None:
        if config.model_type != "bert":
            raise ValueError("only a bert caption decoder starts from text-model weights")
        result = model.bert.load_state_dict(text_state, strict=False)
        unexpected = [k for k in result.unexpected_keys if not k.startswith("pooler.")]
        if unexpected:
            raise ValueError(f"text-model weights do not fit the caption decoder: {unexpected[:5]}")
        model.tie_weights()
    model.generation_config = GenerationConfig(bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id,
                                               pad_token_id=config.pad_token_id,
                                               decoder_start_token_id=config.bos_token_id, **GENERATION)
    return model


class ShortlistHead(torch.nn.Module):
    """An output layer that scores only the tokens of `ids` and gives every other token -inf: the same logits
    as the full layer on those tokens, for a fraction of its cost. A decoder trained on a few hundred captions
    never learned to write a word they lack, and the full 30,522-word layer is about half of each generation
    step's work."""

    def __init__(self, full: torch.nn.Linear, ids):
        super().__init__()
        keep = torch.as_tensor(sorted(set(int(i) for i in ids)), dtype=torch.long, device=full.weight.device)
        self.vocab_size = full.weight.shape[0]
        self.register_buffer("ids", keep)
        self.weight = torch.nn.Parameter(full.weight.detach()[keep].clone(), requires_grad=False)
        self.bias = None if full.bias is None else torch.nn.Parameter(full.bias.detach()[keep].clone(),
                                                                      requires_grad=False)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        scores = torch.nn.functional.linear(hidden, self.weight, self.bias)
        out = scores.new_full((*scores.shape[:-1], self.vocab_size), float("-inf"))
        return out.index_copy_(-1, self.ids, scores)


def use_shortlist(decoder: Captioner) -> Captioner:
    """Give an inference-only decoder whose config names `output_shortlist` (the tokens of its training
    captions) a `ShortlistHead`; a decoder without one keeps its full output layer. Not for training or saving."""
    ids = getattr(decoder.config, "output_shortlist", None)
    full = decoder.lm.get_output_embeddings()
    if ids and isinstance(full, torch.nn.Linear):
        decoder.lm.set_output_embeddings(ShortlistHead(full, ids))
    return decoder


def caption_shortlist(ids: torch.Tensor, mask: torch.Tensor, eos: int) -> list[int]:
    """The token ids the captions `ids` (B, L) hold where `mask` is set, and the end token."""
    return sorted(set(ids[mask.bool()].tolist()) | {int(eos)})


def caption_logits(decoder: Captioner, memory: torch.Tensor, memory_mask: torch.Tensor, ids: torch.Tensor,
                   mask: torch.Tensor) -> torch.Tensor:
    """Teacher-forced next-token logits (B, L, V) of caption tokens `ids` (B, L) given the decoder's memory
    (B, S, H) (`Captioner.memory`)."""
    out = decoder.lm(input_ids=ids, attention_mask=mask, encoder_hidden_states=memory,
                     encoder_attention_mask=memory_mask.long(), use_cache=False)
    return out.logits


def caption_loss(decoder: Captioner, memory, memory_mask, ids, mask) -> torch.Tensor:
    """L = -sum_i log p(y_{i+1} | y_1..y_i, video), averaged over the caption tokens of the batch."""
    return losses.caption_loss(caption_logits(decoder, memory, memory_mask, ids, mask), ids, mask)


def generate(decoder: Captioner, memory: torch.Tensor, memory_mask: torch.Tensor, **settings) -> torch.Tensor:
    """Beam search through `generate()`: the decoder's memory (B, S, H) -> token ids (B, L), starting with `[CLS]`.

    settings override the decoder's generation_config (num_beams, max_length, no_repeat_ngram_size,
    length_penalty, ...); None values are ignored.
    """
    from transformers import DynamicCache, EncoderDecoderCache

    settings = {k: v for k, v in settings.items() if v is not None}
    start = torch.full((memory.shape[0], 1), decoder.config.bos_token_id, dtype=torch.long, device=memory.device)
    # An encoder-decoder cache: the cross-attention keys and values are computed once per beam, not per token.
    cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
    return decoder.lm.generate(input_ids=start, attention_mask=torch.ones_like(start), encoder_hidden_states=memory,
                               encoder_attention_mask=memory_mask.long(), cache=cache, do_sample=False,
                               **settings)


def decode_text(tokenizer, ids: torch.Tensor) -> list[str]:
    """Token ids (B, L) -> sentences, without special tokens and with punctuation attached to its word."""
    texts = tokenizer.batch_decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=True)
    return [re.sub(r"\s+([,.:;!?])", r"\1", t).strip() for t in texts]
