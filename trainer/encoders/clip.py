"""CLIP vision frame encoder (`clip:<hf id or local dir>`) through transformers, for users who have the weights."""
from __future__ import annotations

import torch

from .base import FrameEncoder
from .hub import from_pretrained, quiet_loading, resolve_model_ref

# CLIPImageProcessor's defaults (OpenAI CLIP training statistics); applied here in torch so that no image-processor
# files need to exist next to the weights.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def vision_config(name_or_path: str, local: bool):
    """The vision-tower config of a CLIP checkpoint, whether it holds a whole CLIPModel or only the vision part.

    A whole CLIPModel keeps `projection_dim` at the top level; the vision config alone would fall back to 512 and
    fail to load the projection of models such as ViT-L/14 (768), so it is carried over here.
    """
    from transformers import AutoConfig

    config = from_pretrained(AutoConfig.from_pretrained, name_or_path, local)
    if config.model_type == "clip":
        vision = config.vision_config
        vision.projection_dim = config.projection_dim
        return vision
    if config.model_type != "clip_vision_model":
        raise ValueError(f"{name_or_path!r} holds a {config.model_type!r} model, not a CLIP model")
    return config


class ClipVisionEncoder(FrameEncoder):
    """CLIP image tower with its projection: output = `image_embeds` (dim = projection_dim), not normalised.

    Preprocessing follows CLIPImageProcessor: bicubic resize of the short side to the model's image size, centre
    crop, CLIP mean/std.
    """

    mean = CLIP_MEAN
    std = CLIP_STD
    resize_mode = "bicubic"
    center_crop = True

    def __init__(self, name_or_path: str, device="auto", batch_size: int = 32):
        from transformers import CLIPVisionModelWithProjection

        super().__init__(device, batch_size)
        name_or_path, local = resolve_model_ref(name_or_path, "clip frame encoder")
        try:
            with quiet_loading():
                config = vision_config(name_or_path, local)
                load = CLIPVisionModelWithProjection.from_pretrained
                model, info = from_pretrained(load, name_or_path, local, config=config, output_loading_info=True)
        except (OSError, ValueError, RuntimeError) as exc:
            raise ValueError(f"cannot load CLIP vision weights from {name_or_path!r}: {exc}") from exc
        # A whole CLIPModel brings unused text-tower weights (fine); missing vision weights would mean random output.
        if info.get("missing_keys"):
            missing = sorted(info["missing_keys"])
            raise ValueError(f"CLIP checkpoint {name_or_path!r} lacks vision weights, e.g. {missing[:3]}")
        self.model = model.eval().to(self.device)
        self.name_or_path = name_or_path
        self.spec = f"clip:{name_or_path}"
        self.input_size = int(model.config.image_size)
        self.dim = int(model.config.projection_dim)

    def embed_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, projection_dim) image embeddings."""
        return self.model(pixel_values=pixels.contiguous()).image_embeds
