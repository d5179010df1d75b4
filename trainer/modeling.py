"""VideoBERT: one BERT encoder over caption tokens and visual words, with retrieval embeddings and pretraining heads.

Inputs are built from three pieces: caption token ids (from the BERT tokenizer, `[CLS] ... [SEP]`), visual word
ids (one per frame, from `trainer.vocab`) and the continuous frame features those words were quantised from.
Visual word ids live after the text vocabulary (id = text vocab size + word) and have their own embedding table
so that the text rows can stay exactly as the pretrained text encoder left them. The continuous features are
projected and added to the visual word embeddings (as in CBT) so that quantisation loses less.

Sequences: text only `[CLS] text [SEP]`, video only `[CLS] video [SEP]`, joint `[CLS] text [SEP] video [SEP]`.
Token type 0 marks text, 1 marks video; positions count real tokens left to right, so they carry time order.
This module is pure torch: no files, no training loop.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig, BertModel, PretrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput

from . import losses

MASKED_FRAME = -1       # visual id meaning "this frame is masked": embedded as [MASK], features hidden
SAME_CAPTION = 0.9      # text-embedding cosine above which two captions count as one description
PRIOR_SCALE, PRIOR_OFFSET = 10.0, -5.0   # alignment prior at start: logit 0 at cosine 0.5

_BERT_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
              "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings",
              "type_vocab_size", "layer_norm_eps", "initializer_range", "pad_token_id")


class VideoBertConfig(PretrainedConfig):
    """Every hyperparameter of the model, defaulted to MiniLM-L6 text dims and a 144-word visual vocabulary."""

    model_type = "videobert"

    def __init__(self, vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                 intermediate_size=1536, hidden_act="gelu", hidden_dropout_prob=0.1,
                 attention_probs_dropout_prob=0.1, max_position_embeddings=512, type_vocab_size=2,
                 layer_norm_eps=1e-12, initializer_range=0.02, pad_token_id=0, cls_token_id=101,
                 sep_token_id=102, mask_token_id=103, visual_vocab_size=144, feature_dim=6400,
                 motion_features=True, max_frames=16, trainable_layers=0, text_adapter=True,
                 mlm_weight=0.5, mvp_weight=0.5, align_weight=1.0, nce_weight=1.0, reverse_negatives=True,
                 init_temperature=0.05, joint_pairs=8, fusion_layers=0, align_prior=False, sampling=None,
                 frame_encoder="efficientnet-lite0", colour_dim=0, **kwargs):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.max_position_embeddings = max_position_embeddings
        self.type_vocab_size = type_vocab_size
        self.layer_norm_eps = layer_norm_eps
        self.initializer_range = initializer_range
        self.cls_token_id = cls_token_id
        self.sep_token_id = sep_token_id
        self.mask_token_id = mask_token_id
        self.visual_vocab_size = visual_vocab_size      # number of visual words (branching ** depth)
        self.feature_dim = feature_dim                  # frame-encoder feature size
        self.motion_features = motion_features          # also project frame-to-frame feature differences
        self.max_frames = max_frames                    # longer clips are subsampled uniformly to this
        self.trainable_layers = trainable_layers        # top encoder layers tuned; 0 keeps the text encoder intact
        self.text_adapter = text_adapter                # residual linear map on pooled text, zero at start
        self.mlm_weight = mlm_weight
        self.mvp_weight = mvp_weight
        self.align_weight = align_weight
        self.nce_weight = nce_weight
        self.reverse_negatives = reverse_negatives      # time-reversed clips as hard negatives
        self.init_temperature = init_temperature
        self.joint_pairs = joint_pairs                  # pairs per batch given to the joint objectives (0 = all)
        self.fusion_layers = fusion_layers              # trainable layers over joint inputs, after the encoder
        self.align_prior = align_prior                  # alignment logit also sees the pair's retrieval cosine
        self.sampling = dict(sampling or {})            # how clips were sampled for training (SamplingConfig fields)
        self.frame_encoder = frame_encoder              # frame-encoder spec, for trainer.encoders.load_frame_encoder
        # trailing colour-histogram values of each frame's features (trainer.encoders.colour): VideoBERT reads
        # the network features before them, and leaves colour to the caption decoder (see FeatureProjection)
        self.colour_dim = colour_dim
        super().__init__(pad_token_id=pad_token_id, **kwargs)

    def bert_config(self) -> BertConfig:
        """The BertConfig of the shared encoder (text vocabulary only; visual words are separate)."""
        return BertConfig(**{k: getattr(self, k) for k in _BERT_KEYS})


class FeatureProjection(nn.Module):
    """Continuous frame features (and their frame-to-frame change) -> hidden size, added to visual words.

    Only the network's features are read, not the colour histograms after them (`config.colour_dim`): given
    them, VideoBERT's retrieval got worse on the generated benchmark (t2v R@1 0.833 against 0.750, one seed),
    while the caption decoder, which reads them in slots of their own, names colours far better."""

    def __init__(self, config: VideoBertConfig):
        super().__init__()
        self.width = config.feature_dim - config.colour_dim
        self.norm = nn.LayerNorm(self.width)
        self.proj = nn.Linear(self.width, config.hidden_size)
        self.motion = config.motion_features
        if self.motion:
            self.motion_norm = nn.LayerNorm(self.width)
            self.motion_proj = nn.Linear(self.width, config.hidden_size)

    def forward(self, features: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """features (B, T, F), keep (B, T) bool for real unmasked frames -> (B, T, H)."""
        keep = keep.unsqueeze(-1).to(features.dtype)
        feats = features[..., :self.width] * keep                # masked frames reveal nothing
        out = self.proj(self.norm(feats)) * keep
        if self.motion:
            diff = feats[:, 1:] - feats[:, :-1]                  # (B, T-1, F)
            both = keep[:, 1:] * keep[:, :-1]
            diff = F.pad(diff * both, (0, 0, 1, 0))             # first frame has no predecessor
            both = F.pad(both, (0, 0, 1, 0))
            out = out + self.motion_proj(self.motion_norm(diff)) * both
        return out


class ResidualAdapter(nn.Module):
    """x + W x, with W starting at zero so that training starts from the pretrained text space."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear = nn.Linear(dim, dim)
        self.linear.zero_init = True        # read by _init_weights, whatever order modules are visited in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.linear(x)


class FusionEncoder(nn.Module):
    """Trainable transformer layers that joint `[CLS] text [SEP] video [SEP]` inputs pass through after the
    shared encoder. With the pretrained encoder frozen (to keep text queries in its space), its attention was
    never trained to relate captions to visual words; these layers are where text and video meet, for the
    alignment, masked-language and masked-visual-word objectives."""

    def __init__(self, config: VideoBertConfig):
        super().__init__()
        layer = nn.TransformerEncoderLayer(config.hidden_size, config.num_attention_heads, config.intermediate_size,
                                           config.hidden_dropout_prob, activation="gelu", batch_first=True,
                                           layer_norm_eps=config.layer_norm_eps)
        self.layers = nn.TransformerEncoder(layer, config.fusion_layers, enable_nested_tensor=False)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, L, H) encoder states and (B, L) attention mask -> (B, L, H)."""
        return self.layers(hidden, src_key_padding_mask=~mask.bool())


class VideoBertPreTrainedModel(PreTrainedModel):
    """Weight init and the save_pretrained/from_pretrained plumbing shared by the base model and heads."""

    config_class = VideoBertConfig
    base_model_prefix = "videobert"

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        if getattr(module, "zero_init", False):
            module.weight.zero_()
            module.bias.zero_()
        elif isinstance(module, VideoBertModel):
            module.logit_scale.fill_(math.log(1.0 / self.config.init_temperature))
        elif isinstance(module, AlignmentHead) and module.prior is not None:
            module.prior.copy_(torch.tensor([PRIOR_SCALE, PRIOR_OFFSET]))


def reverse_time(x: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
    """Play each clip backwards: reverse the real frames of (B, T, ...) `x`, leaving padding in place."""
    lengths = frame_mask.sum(1, keepdim=True)                        # (B, 1)
    t = torch.arange(frame_mask.shape[1], device=x.device)[None]      # (1, T)
    index = torch.where(t < lengths, lengths - 1 - t, t)              # (B, T)
    index = index.view(*index.shape, *([1] * (x.dim() - 2))).expand_as(x)
    return torch.gather(x, 1, index)


class VideoBertModel(VideoBertPreTrainedModel):
    """The base model: the shared encoder plus the dual-encoder projections used for retrieval."""

    # A checkpoint of VideoBertForPreTraining also holds the heads; the base model leaves them out.
    _keys_to_ignore_on_load_unexpected = [r"(mlm|mvp|align)_head\."]

    def __init__(self, config: VideoBertConfig):
        super().__init__(config)
        self.bert = BertModel(config.bert_config(), add_pooling_layer=False)
        self.visual_embeddings = nn.Embedding(config.visual_vocab_size, config.hidden_size)
        self.feature_proj = FeatureProjection(config)
        self.text_adapter = ResidualAdapter(config.hidden_size) if config.text_adapter else None
        self.fusion = FusionEncoder(config) if config.fusion_layers else None
        h = config.hidden_size
        self.video_proj = nn.Sequential(nn.Linear(h, h), nn.GELU(), nn.Linear(h, h))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / config.init_temperature)))
        self.post_init()

    @property
    def dim(self) -> int:
        """Size of the retrieval embeddings (the text encoder's hidden size)."""
        return self.config.hidden_size

    def _token_embeds(self, ids: torch.Tensor) -> torch.Tensor:
        return self.bert.embeddings.word_embeddings(ids)

    def _special(self, token_id: int, batch: int, device) -> torch.Tensor:
        ids = torch.full((batch, 1), token_id, dtype=torch.long, device=device)
        return self._token_embeds(ids)                                    # (B, 1, H)

    def _video_embeds(self, visual_ids, features, frame_mask) -> torch.Tensor:
        """(B, T) ids (MASKED_FRAME for masked), (B, T, F), (B, T) -> (B, T, H) visual token embeddings."""
        masked = visual_ids == MASKED_FRAME
        words = self.visual_embeddings(visual_ids.clamp(min=0))
        mask_emb = self._special(self.config.mask_token_id, 1, visual_ids.device)
        words = torch.where(masked.unsqueeze(-1), mask_emb.expand_as(words), words)
        return words + self.feature_proj(features.to(words.dtype), frame_mask & ~masked)

    def _encode(self, parts: list[tuple[torch.Tensor, torch.Tensor, int]], joint: bool = False) -> torch.Tensor:
        """Concatenate (embeds (B, L, H), mask (B, L), token type) parts and run the encoder -> (B, sum L, H);
        joint inputs then go through the fusion layers, if the model has them."""
        embeds = torch.cat([p[0] for p in parts], 1)
        mask = torch.cat([p[1].long() for p in parts], 1)
        types = torch.cat([torch.full_like(p[1], p[2], dtype=torch.long) for p in parts], 1)
        positions = (mask.cumsum(1) - 1).clamp(min=0)        # real tokens numbered left to right
        out = self.bert(inputs_embeds=embeds, attention_mask=mask, token_type_ids=types, position_ids=positions)
        hidden = out.last_hidden_state
        return self.fusion(hidden, mask) if joint and self.fusion is not None else hidden

    def _video_parts(self, visual_ids, features, frame_mask):
        b, dev = visual_ids.shape[0], visual_ids.device
        ones = torch.ones(b, 1, dtype=torch.bool, device=dev)
        video = self._video_embeds(visual_ids, features, frame_mask)
        return [(video, frame_mask, 1), (self._special(self.config.sep_token_id, b, dev), ones, 1)]

    def forward(self, text_ids=None, text_mask=None, visual_ids=None, features=None, frame_mask=None):
        """Encode text only, video only, or `[CLS] text [SEP] video [SEP]` when both are given.

        text_ids/text_mask (B, Lt) include the tokenizer's [CLS] and [SEP]; visual_ids/frame_mask (B, T),
        features (B, T, F). Returns the last hidden state (B, L, H).
        """
        parts = []
        if text_ids is not None:
            parts.append((self._token_embeds(text_ids), text_mask.bool(), 0))
        if visual_ids is not None:
            if not parts:
                b = visual_ids.shape[0]
                ones = torch.ones(b, 1, dtype=torch.bool, device=visual_ids.device)
                parts.append((self._special(self.config.cls_token_id, b, visual_ids.device), ones, 0))
            parts += self._video_parts(visual_ids, features, frame_mask.bool())
        if not parts:
            raise ValueError("VideoBertModel needs text_ids, visual_ids or both")
        return self._encode(parts, joint=text_ids is not None and visual_ids is not None)

    def get_text_embeddings(self, text_ids, text_mask, normalize: bool = True, adapt: bool = True) -> torch.Tensor:
        """Mean-pooled text-only encoding (+ residual adapter) -> (B, H).

        adapt=False leaves the adapter out: with the encoder frozen, that is the pretrained sentence embedding.
        """
        hidden = self(text_ids=text_ids, text_mask=text_mask)
        pooled = _masked_mean(hidden, text_mask)
        if adapt and self.text_adapter is not None:
            pooled = self.text_adapter(pooled)
        return F.normalize(pooled, dim=-1) if normalize else pooled

    def video_states(self, visual_ids, features, frame_mask) -> tuple[torch.Tensor, torch.Tensor]:
        """Video-only hidden states `[CLS] video [SEP]` (B, T + 2, H) and their mask (B, T + 2): what a caption
        decoder cross-attends to."""
        return self(visual_ids=visual_ids, features=features, frame_mask=frame_mask), video_state_mask(frame_mask)

    def get_video_embeddings(self, visual_ids, features, frame_mask, normalize: bool = True) -> torch.Tensor:
        """Video-only encoding, mean-pooled over frames and projected into the text space -> (B, H)."""
        hidden = self(visual_ids=visual_ids, features=features, frame_mask=frame_mask)
        return self.pool_video(hidden, frame_mask, normalize)

    def video_pass(self, visual_ids, features, frame_mask) -> tuple[torch.Tensor, torch.Tensor]:
        """One video-only pass -> (the clip embeddings (B, H) of `get_video_embeddings`, the hidden states
        (B, T + 2, H) of `video_states`): what indexing and describing a clip both read."""
        hidden = self(visual_ids=visual_ids, features=features, frame_mask=frame_mask)
        return self.pool_video(hidden, frame_mask), hidden

    def pool_video(self, hidden, frame_mask, normalize: bool = True) -> torch.Tensor:
        """Video-only hidden states `[CLS] frames [SEP]` (B, T + 2, H) -> the clip's embedding (B, H)."""
        frames = hidden[:, 1:1 + frame_mask.shape[1]]                # skip [CLS]
        pooled = self.video_proj(_masked_mean(frames, frame_mask))
        return F.normalize(pooled, dim=-1) if normalize else pooled


def video_state_mask(frame_mask: torch.Tensor) -> torch.Tensor:
    """The mask (B, T + 2) of video-only hidden states `[CLS] frames [SEP]` for frames `frame_mask` (B, T)."""
    ones = torch.ones(frame_mask.shape[0], 1, dtype=torch.bool, device=frame_mask.device)
    return torch.cat([ones, frame_mask.bool(), ones], 1)


def _moving_rows(frame_mask: torch.Tensor) -> torch.Tensor:
    """Rows whose clip has at least two frames: only those change when played backwards."""
    return torch.nonzero(frame_mask.sum(1) >= 2).flatten()


def _masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


class TokenPredictionHead(nn.Module):
    """Transform + tied decoder: hidden (.., H) and an embedding table (V, H) -> logits (.., V)."""

    def __init__(self, config: VideoBertConfig, vocab: int):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(vocab))

    def forward(self, hidden: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        return self.norm(F.gelu(self.dense(hidden))) @ table.T + self.bias


class AlignmentHead(nn.Module):
    """[CLS] of a joint input -> one logit: does the caption describe the clip?

    With `align_prior`, the pair's retrieval cosine is added through a learned scale and offset: the classifier
    starts as good as the dual-encoder embeddings, and the joint pass learns what they miss (which way things
    move, which object does what) instead of relearning matching from scratch in a few hundred steps."""

    def __init__(self, config: VideoBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.out = nn.Linear(config.hidden_size, 1)
        self.prior = nn.Parameter(torch.tensor([PRIOR_SCALE, PRIOR_OFFSET])) if config.align_prior else None

    def forward(self, cls_hidden: torch.Tensor, cosine: torch.Tensor | None = None) -> torch.Tensor:
        """(B, H) [CLS] states and, with a prior, (B,) text-video cosines -> (B,) logits."""
        logit = self.out(torch.tanh(self.dense(cls_hidden))).squeeze(-1)
        if self.prior is not None:
            if cosine is None:
                raise ValueError("this alignment head also needs the pairs' retrieval cosines")
            logit = logit + self.prior[0] * cosine + self.prior[1]
        return logit


@dataclass
class VideoBertPreTrainingOutput(ModelOutput):
    """Losses (when labels were given) and the embeddings they were computed from."""

    loss: torch.Tensor | None = None
    mlm_loss: torch.Tensor | None = None
    mvp_loss: torch.Tensor | None = None
    align_loss: torch.Tensor | None = None
    nce_loss: torch.Tensor | None = None
    text_embeds: torch.Tensor | None = None
    video_embeds: torch.Tensor | None = None
    video_states: torch.Tensor | None = None        # the clips' video-only hidden states, as video_states gives
    video_state_mask: torch.Tensor | None = None


class VideoBertForPreTraining(VideoBertPreTrainedModel):
    """Base model + masked-language, masked-visual-token and alignment heads, and the four objectives."""

    def __init__(self, config: VideoBertConfig):
        super().__init__(config)
        self.videobert = VideoBertModel(config)
        self.mlm_head = TokenPredictionHead(config, config.vocab_size)
        self.mvp_head = TokenPredictionHead(config, config.visual_vocab_size)
        self.align_head = AlignmentHead(config)
        self.post_init()

    def alignment_logits(self, text_ids, text_mask, visual_ids, features, frame_mask,
                         cosine: torch.Tensor | None = None) -> torch.Tensor:
        """Joint-input alignment logit for text i with clip i -> (B,).

        cosine: the pairs' retrieval cosines, for a head with a prior; computed here when not given."""
        hidden = self.videobert(text_ids, text_mask, visual_ids, features, frame_mask)
        if self.config.align_prior and cosine is None:
            text = self.videobert.get_text_embeddings(text_ids, text_mask)
            video = self.videobert.get_video_embeddings(visual_ids, features, frame_mask)
            cosine = (text * video).sum(-1)
        return self.align_head(hidden[:, 0], cosine if self.config.align_prior else None)

    def forward(self, text_ids, text_mask, visual_ids, features, frame_mask, mlm_text_ids=None,
                mlm_labels=None, mvp_visual_ids=None, mvp_labels=None, return_loss: bool = False):
        """Embed a batch of (caption, clip) pairs; with labels / return_loss, compute the weighted objectives.

        mlm_text_ids/mlm_labels (B, Lt): masked captions and their targets (-100 elsewhere);
        mvp_visual_ids/mvp_labels (B, T): visual ids with MASKED_FRAME at masked frames and their targets.
        The token objectives and the alignment classifier share one joint pass over the (masked) positive
        pairs, as BERT's next-sentence objective did; a second joint pass scores one negative per caption.
        """
        base, cfg = self.videobert, self.config
        text = base.get_text_embeddings(text_ids, text_mask)
        states, state_mask = base.video_states(visual_ids, features, frame_mask)
        video = base.pool_video(states, frame_mask)
        out = VideoBertPreTrainingOutput(text_embeds=text, video_embeds=video, video_states=states,
                                         video_state_mask=state_mask)
        terms = {}
        if return_loss and cfg.nce_weight:
            extra = self._reversed_embeddings(visual_ids, features, frame_mask) if cfg.reverse_negatives else None
            terms["nce_loss"] = losses.info_nce(text, video, base.logit_scale, extra_video=extra)
        align = return_loss and bool(cfg.align_weight)
        if mlm_labels is not None or mvp_labels is not None or align:
            # The joint objectives see the first `joint_pairs` pairs (batches are shuffled): a joint pass
            # costs several times a single-modality pass, and retrieval quality comes from InfoNCE.
            j = slice(0, cfg.joint_pairs or None)
            joint_text = (mlm_text_ids if mlm_labels is not None else text_ids)[j]
            vis_all = mvp_visual_ids if mvp_labels is not None else visual_ids
            joint_vis = vis_all[j]
            hidden = base(joint_text, text_mask[j], joint_vis, features[j], frame_mask[j])   # (J, Lt + T + 1, H)
            terms.update(self._token_losses(hidden, text_ids.shape[1], None if mlm_labels is None else mlm_labels[j],
                                            None if mvp_labels is None else mvp_labels[j]))
            if align:
                negative = self._negative_logits(text, video, joint_text, text_mask[j], visual_ids, vis_all, features,
                                                 frame_mask)
                # The prior is an input to objective 3, not something it trains: InfoNCE owns the embeddings.
                cosine = (text[j] * video[j]).sum(-1).detach() if cfg.align_prior else None
                logits = torch.cat([self.align_head(hidden[:, 0], cosine), negative])
                labels = torch.cat([torch.ones(len(hidden)), torch.zeros(len(negative))]).to(logits.device)
                terms["align_loss"] = losses.alignment_loss(logits, labels)
        weights = {"nce_loss": cfg.nce_weight, "align_loss": cfg.align_weight,
                   "mlm_loss": cfg.mlm_weight, "mvp_loss": cfg.mvp_weight}
        for name, value in terms.items():
            setattr(out, name, value)
        if terms:
            out.loss = sum(weights[k] * v for k, v in terms.items())
        return out

    def _reversed_embeddings(self, visual_ids, features, frame_mask) -> torch.Tensor | None:
        """Embeddings of the clips (with at least two frames) played backwards, or None if there are none."""
        rows = _moving_rows(frame_mask)
        if len(rows) == 0:
            return None
        ids, feats, fmask = visual_ids[rows], features[rows], frame_mask[rows]
        return self.videobert.get_video_embeddings(reverse_time(ids, fmask), reverse_time(feats, fmask), fmask)

    def _negative_logits(self, text, video, text_ids, text_mask, visual_ids, masked_ids, features, frame_mask):
        """Alignment logits of the first J captions, each with one wrong clip -> (K,), K <= J.

        Captions take turns with three kinds of negative: their own clip played backwards (left becomes right,
        growing becomes shrinking), the other clip of the batch closest to them in embedding space, and a random
        other clip, which keeps the classifier learning while the hard ones are still beyond it. Clips whose
        caption says nearly the same as this one are not negatives: a synthetic or real library often holds
        several clips of one description. `visual_ids` (B, T) are masked the same way as the positives', so
        masking tells nothing; their retrieval cosines (for a head with a prior) come from unmasked clips, as
        the positives' do.
        """
        b, j = video.shape[0], text_ids.shape[0]
        rows = torch.arange(j, device=text_ids.device)
        moving = (frame_mask[:j].sum(1) >= 2) & self.config.reverse_negatives
        with torch.no_grad():
            allowed = (text[:j] @ text.T) < SAME_CAPTION                  # (J, B)
            allowed[rows, rows] = False
            sim = (text[:j] @ video.T).masked_fill(~allowed, float("-inf"))
            hardest = sim.argmax(1)
            random = torch.multinomial(allowed.float() + 1e-12, 1).flatten()
        has_other = allowed.any(1)
        kind = rows % 3
        use_rev = moving & ((kind == 0) | ~has_other)
        keep = use_rev | has_other                                         # rows with some negative to offer
        if not keep.any():
            return text.new_zeros(0)
        other = torch.where(kind == 1, hardest, random)
        rows, use_rev, other = rows[keep], use_rev[keep], other[keep]
        pick = use_rev.view(-1, 1)
        fmask = frame_mask[rows]
        neg_ids = torch.where(pick, reverse_time(masked_ids[rows], fmask), masked_ids[other])
        neg_feats = torch.where(pick.unsqueeze(-1), reverse_time(features[rows], fmask), features[other])
        neg_mask = torch.where(pick, fmask, frame_mask[other])
        cosine = None
        if self.config.align_prior:
            with torch.no_grad():
                clean = torch.where(pick, reverse_time(visual_ids[rows], fmask), visual_ids[other])
                neg_video = self.videobert.get_video_embeddings(clean, neg_feats, neg_mask)
                cosine = (text[rows] * neg_video).sum(-1)
        return self.alignment_logits(text_ids[rows], text_mask[rows], neg_ids, neg_feats, neg_mask, cosine)

    def _token_losses(self, hidden, text_len: int, mlm_labels, mvp_labels) -> dict:
        """MLM on caption positions and visual-word prediction on frame positions of a joint pass.

        Logits are computed only at masked positions: a full (B, L, 30k) logit tensor would cost more than
        the encoder itself.
        """
        terms = {}
        if mlm_labels is not None:
            table = self.videobert.bert.embeddings.word_embeddings.weight
            terms["mlm_loss"] = _masked_token_loss(self.mlm_head, hidden[:, :text_len], table, mlm_labels)
        if mvp_labels is not None:
            table = self.videobert.visual_embeddings.weight
            frames = hidden[:, text_len:text_len + mvp_labels.shape[1]]
            terms["mvp_loss"] = _masked_token_loss(self.mvp_head, frames, table, mvp_labels)
        return terms


def _masked_token_loss(head, hidden, table, labels) -> torch.Tensor:
    keep = labels != -100                                              # (B, L)
    return losses.token_loss(head(hidden[keep], table), labels[keep])  # (K, V) logits vs (K,) targets


def _register_auto_classes() -> None:
    """Let AutoConfig / AutoModel (and AutoTokenizer, which reads config.json) recognise `videobert` dirs."""
    from transformers import AutoConfig, AutoModel

    try:
        AutoConfig.register(VideoBertConfig.model_type, VideoBertConfig)
        AutoModel.register(VideoBertConfig, VideoBertModel)
    except ValueError:
        pass        # already registered (module reloaded)


_register_auto_classes()
