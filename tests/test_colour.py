"""Tests for the frames' hue-chroma histograms and the frame encoder that carries them."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer.encoders import load_frame_encoder
from trainer.encoders.colour import BINS, CHROMA_LEVELS, HUES, bins, colour_histograms


def rgb(*pixels) -> torch.Tensor:
    """(1, 3, 1, N) image of the given 0-255 RGB pixels."""
    return torch.tensor(pixels, dtype=torch.float32).T.reshape(1, 3, 1, -1) / 255.0


def test_vivid_colours_fall_in_their_hue_sector_and_muted_ones_by_lightness():
    red, green, blue, yellow = (220, 40, 40), (40, 190, 60), (50, 90, 235), (245, 215, 40)
    got = bins(rgb(red, green, blue, yellow))[0, 0].tolist()
    hue = [b // CHROMA_LEVELS for b in got]
    assert [b % CHROMA_LEVELS for b in got] == [1, 0, 1, 1]  # the green's chroma, 0.59, is below 2/3
    assert hue == [0, 4, 7, 1]                       # 0, 128, 222 and 52 degrees, in 30-degree sectors
    # navy is saturated in HSV terms (0.75) but dark and muted: no hue; black, grey and white by lightness
    navy, black, grey, white = (20, 28, 80), (12, 12, 12), (120, 120, 120), (245, 245, 245)
    achromatic = [b - HUES * CHROMA_LEVELS for b in bins(rgb(navy, black, grey, white))[0, 0].tolist()]
    assert achromatic == [0, 0, 1, 2]


def test_histograms_are_unit_vectors_per_block_with_cells_in_row_major_order():
    image = torch.zeros(2, 3, 8, 8)
    image[0, 0, :, :4] = 1.0                          # image 0: red left half, blue right half
    image[0, 2, :, 4:] = 1.0
    image[1] = 0.5                                    # image 1: plain grey
    out = colour_histograms(image, grid=2)
    assert out.shape == (2, BINS * 5)
    blocks = out.view(2, 5, BINS)
    assert torch.allclose((blocks ** 2).sum(-1), torch.ones(2, 5))
    red, blue = 0 * CHROMA_LEVELS + 1, 8 * CHROMA_LEVELS + 1
    assert blocks[0, 0, red] == pytest.approx(0.5 ** 0.5) and blocks[0, 0, blue] == pytest.approx(0.5 ** 0.5)
    assert [int(b.argmax()) for b in blocks[0, 1:]] == [red, blue, red, blue]  # top-left, top-right, ...
    assert (blocks[1].argmax(-1) == HUES * CHROMA_LEVELS + 1).all()         # grey: mid lightness everywhere
    assert colour_histograms(image, grid=0).shape == (2, BINS)


def test_large_frames_are_counted_at_a_reduced_size_with_the_same_shares():
    image = torch.zeros(1, 3, 224, 224)
    image[0, 1, 56:168, 56:168] = 0.8                 # a green square on black, a quarter of the frame
    small = torch.nn.functional.avg_pool2d(image, 4)
    assert torch.allclose(colour_histograms(image, 2), colour_histograms(small, 2))
    assert float(colour_histograms(image, 0)[0, 4 * CHROMA_LEVELS + 1]) == pytest.approx(0.5)


def test_the_colour_encoder_appends_histograms_to_the_same_network_features():
    plain = load_frame_encoder("efficientnet-lite0", device="cpu")
    coloured = load_frame_encoder("efficientnet-lite0:colour=1", device="cpu")
    assert coloured.spec == "efficientnet-lite0:colour=1" and coloured.dim == (1280 + BINS) * 5
    assert load_frame_encoder(coloured.spec, device="cpu").dim == coloured.dim
    assert load_frame_encoder("efficientnet-lite0:grid=1,colour=1", device="cpu").dim == (1280 + BINS) * 2
    frames = np.zeros((2, 120, 160, 3), np.uint8)
    frames[0, ..., 0] = 220                           # a red frame and a blue one: the network's features differ
    frames[1, ..., 2] = 235                           # little, the histograms wholly
    out = coloured.encode(frames)
    assert np.allclose(out[:, :6400], plain.encode(frames), atol=1e-5)
    hist = out[:, 6400:6400 + BINS]
    assert hist[0].argmax() == 0 * CHROMA_LEVELS + 1 and hist[1].argmax() == 8 * CHROMA_LEVELS + 1
    assert coloured.label_probs(out).shape == (2, 1000)
    with pytest.raises(ValueError, match="colour"):
        load_frame_encoder("efficientnet-lite0:colour=3", device="cpu")


def test_centred_sectors_give_each_named_hue_a_sector_of_its_own():
    import colorsys

    def sector(degrees, centred):
        r, g, b = colorsys.hsv_to_rgb(degrees / 360.0, 1.0, 1.0)
        return int(bins(rgb((r * 255, g * 255, b * 255)), centred)[0, 0, 0]) // CHROMA_LEVELS

    for name, hue in {"red": 0, "orange": 30, "yellow": 60, "green": 120, "blue": 240, "magenta": 300}.items():
        around = {sector((hue + d) % 360, True) for d in (-14, -5, 0, 5, 14)}
        assert around == {hue // 30}, name        # 14 degrees either side stays in the hue's own sector
    # Sectors that start at the named hues split each of them: a red either side of 0 degrees, an orange either
    # side of 30, land in two sectors, and a yellowish orange shares a sector with an orangey yellow.
    assert sector(359, False) != sector(1, False) and sector(29, False) != sector(31, False)
    assert sector(35, False) == sector(55, False) and sector(35, True) != sector(55, True)


def test_the_centred_colour_encoder_differs_only_in_its_histograms():
    old = load_frame_encoder("efficientnet-lite0:colour=1", device="cpu")
    new = load_frame_encoder("efficientnet-lite0:colour=2", device="cpu")
    assert new.spec == "efficientnet-lite0:colour=2" and new.dim == old.dim
    assert load_frame_encoder(new.spec, device="cpu").spec == new.spec
    frames = np.zeros((1, 64, 64, 3), np.uint8)
    frames[0, :, :32] = (250, 140, 30)                # orange, 30 degrees: on a border of the first sectors
    frames[0, :, 32:] = (245, 215, 40)                # yellow, 51 degrees
    a, b = old.encode(frames), new.encode(frames)
    assert np.allclose(a[:, :6400], b[:, :6400])
    orange, yellow = 1 * CHROMA_LEVELS + 1, 2 * CHROMA_LEVELS + 1
    whole = b[0, 6400:6400 + BINS]
    assert whole[orange] == pytest.approx(0.5 ** 0.5, abs=0.02) and whole[yellow] == pytest.approx(0.5 ** 0.5, abs=0.02)


def test_a_spec_says_how_wide_its_colour_block_is_and_how_many_cells_it_has():
    from trainer.card import LITE0_COLOUR_BINS, colour_width, frame_cells

    assert LITE0_COLOUR_BINS == BINS
    assert [colour_width(s) for s in ("efficientnet-lite0", "efficientnet-lite0:colour=1",
                                      "efficientnet-lite0:grid=0,colour=1", "clip:openai/clip-vit-base-patch32")] \
        == [0, BINS * 5, BINS, 0]
    assert [frame_cells(s) for s in ("efficientnet-lite0", "efficientnet-lite0:grid=3", "clip:x")] == [5, 10, 1]
    for spec in ("efficientnet-lite0:colour=1", "efficientnet-lite0:grid=1,colour=1"):
        assert load_frame_encoder(spec, device="cpu").dim == (1280 + BINS) * frame_cells(spec)
    with pytest.raises(ValueError, match="integers"):
        colour_width("efficientnet-lite0:grid=x")
