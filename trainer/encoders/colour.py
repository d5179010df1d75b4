"""Colour histograms of frames: what an ImageNet-trained network's features keep only faintly.

An ImageNet classifier learns to name things whatever their colour: a linear readout of EfficientNet-Lite0's pooled
features names the colour of a generated shape in an unseen combination on about two clips in three, and of these
histograms on every one (BENCHMARKS.md, "Captioning"). A hue-chroma histogram says it directly, for a pass over a
small copy of the pixels.

Each pixel falls in one bin, by its chroma (max(R, G, B) - min(R, G, B), in [0, 1]):

* chromatic (chroma >= 1/3): one of HUES hue sectors, split into moderate (< 2/3) and strong chroma. With
  `centred`, each sector is centred on one of the twelve hues 30 degrees apart that colours are named by (red at
  0, orange at 30, yellow at 60, ... magenta at 300); without, the sectors start at those hues, so each named
  hue lies on a border, and compression noise spreads a plain orange over the sectors of red and of yellow;
* achromatic (chroma < 1/3): one of three value levels (dark, mid, light), where hue means little.

Chroma rather than HSV saturation, because a dark muted colour (navy: saturation 0.75, chroma 0.24) is not a
vivid one. The histogram is taken over the whole frame and over each cell of the same grid as the network's
pooled features, and each histogram is square-rooted (the Hellinger map), so that a small vivid object is not
drowned by the area of its background and a linear map of the features compares histograms sensibly.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

HUES = 12  # 30-degree hue sectors
CHROMA_LEVELS = 2  # moderate and strong chroma among chromatic pixels
VALUE_LEVELS = 3  # dark, mid and light among achromatic pixels
BINS = HUES * CHROMA_LEVELS + VALUE_LEVELS
# Histograms are counted on the frame averaged down to this side: a 4x4 block of a 224-pixel input is finer than
# any object worth naming, and counting 56x56 pixels costs a fortieth of counting 224x224 (about 0.05 ms a frame
# on one CPU core, against about 9 ms for the network).
SIDE = 56


def _hue(rgb: torch.Tensor, top: torch.Tensor, chroma: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> (B, H, W) hue in [0, 1) (0 where chroma is 0)."""
    r, g, b = rgb.unbind(1)
    c = chroma.clamp_min(1e-6)
    hue = torch.where(top == r, torch.remainder((g - b) / c, 6.0),
                      torch.where(top == g, (b - r) / c + 2.0, (r - g) / c + 4.0))
    return hue / 6.0


def bins(rgb: torch.Tensor, centred: bool = False) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> (B, H, W) bin index of every pixel, in [0, BINS)."""
    top, low = rgb.amax(dim=1), rgb.amin(dim=1)
    chroma = top - low
    hue = _hue(rgb, top, chroma) * HUES
    hue = (torch.remainder(hue + 0.5, HUES) if centred else hue).long().clamp_(0, HUES - 1)
    level = (chroma * 3).long().clamp_(1, 2) - 1                      # chroma in [1/3, 2/3) -> 0, [2/3, 1] -> 1
    chromatic = hue * CHROMA_LEVELS + level
    achromatic = HUES * CHROMA_LEVELS + (top * VALUE_LEVELS).long().clamp_(0, VALUE_LEVELS - 1)
    return torch.where(chroma >= 1.0 / 3.0, chromatic, achromatic)


def colour_histograms(rgb: torch.Tensor, grid: int, centred: bool = False) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> (B, BINS * (1 + grid*grid)): the square root of the whole frame's bin
    shares, then of each grid cell's (row-major, as the network's grid pooling orders its cells). Frames
    larger than SIDE are averaged down to about SIDE first. `centred`: hue sectors centred on the named hues."""
    if min(rgb.shape[-2:]) >= 2 * SIDE:
        rgb = F.avg_pool2d(rgb, min(rgb.shape[-2:]) // SIDE)
    n, _, h, w = rgb.shape
    g = max(int(grid), 1)
    rows = torch.arange(h, device=rgb.device) * g // h
    cols = torch.arange(w, device=rgb.device) * g // w
    cell = (rows[:, None] * g + cols[None, :]).expand(n, h, w)                  # (B, H, W) cell of each pixel
    image = torch.arange(n, device=rgb.device)[:, None, None]
    key = (image * (g * g) + cell) * BINS + bins(rgb, centred)
    counts = torch.bincount(key.reshape(-1), minlength=n * g * g * BINS).view(n, g * g, BINS).to(torch.float32)
    shares = [counts.sum(dim=1) / (h * w)]
    if grid > 0:
        area = torch.bincount(cell[0].reshape(-1), minlength=g * g).to(torch.float32)  # pixels per cell
        shares.append((counts / area[None, :, None]).reshape(n, -1))
    return torch.cat(shares, dim=1).sqrt_()
