"""Visual words: hierarchical k-means recovers planted clusters, ids are stable, files round-trip."""
from __future__ import annotations

import numpy as np
import pytest

from trainer.vocab import VisualVocabulary, fit_vocabulary


def _clustered(n_per: int, centres: np.ndarray, noise: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(centres)), n_per)
    return centres[labels] + noise * rng.standard_normal((len(labels), centres.shape[1])), labels


def test_two_level_tree_separates_planted_clusters():
    rng = np.random.default_rng(1)
    # 3 far-apart groups, each split into 3 nearby sub-groups: the tree's levels should mirror that.
    coarse = 20.0 * rng.standard_normal((3, 16))
    centres = np.concatenate([c + 3.0 * rng.standard_normal((3, 16)) for c in coarse])
    feats, labels = _clustered(30, centres, 0.1)
    vocab = fit_vocabulary(feats, branching=3, depth=2, seed=0)
    assert vocab.size == 9 and vocab.dim == 16
    words = vocab.quantize(feats)
    assert words.min() >= 0 and words.max() < 9
    # Every planted cluster maps to exactly one word and different clusters to different words.
    mapping = {lab: set(words[labels == lab]) for lab in range(9)}
    assert all(len(ws) == 1 for ws in mapping.values())
    assert len({next(iter(ws)) for ws in mapping.values()}) == 9
    # Sub-groups of the same coarse group share the first digit (base 3) of their word id.
    for g in range(3):
        assert len({next(iter(mapping[3 * g + k])) // 3 for k in range(3)}) == 1


def test_quantize_is_deterministic_and_matches_nearest_leaf():
    feats, _ = _clustered(20, np.random.default_rng(2).standard_normal((4, 8)) * 5, 0.5)
    a = fit_vocabulary(feats, branching=2, depth=2, seed=3)
    b = fit_vocabulary(feats, branching=2, depth=2, seed=3)
    assert np.array_equal(a.quantize(feats), b.quantize(feats))
    # A leaf centroid is quantised to its own id.
    leaves = a.levels[-1].reshape(-1, 8)
    own = a.quantize(leaves)
    distinct = [i for i in range(len(leaves)) if not any(np.allclose(leaves[i], leaves[j]) for j in range(i))]
    assert all(own[i] == i for i in distinct)


def test_words_come_from_the_leading_values_and_narrow_features_are_refused():
    """Colour histograms after the network's features (trainer.encoders.colour) make no words of their own."""
    feats, _ = _clustered(20, np.random.default_rng(2).standard_normal((4, 8)) * 5, 0.5)
    vocab = fit_vocabulary(feats, branching=2, depth=2, seed=3)
    wider = np.concatenate([feats, np.random.default_rng(4).standard_normal((len(feats), 3))], axis=1)
    assert np.array_equal(vocab.quantize(wider), vocab.quantize(feats))
    with pytest.raises(ValueError, match="8"):
        vocab.quantize(feats[:, :6])


def test_too_few_points_still_give_a_full_tree():
    feats = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    vocab = fit_vocabulary(feats, branching=4, depth=3)
    assert vocab.size == 64
    assert vocab.levels[2].shape == (16, 4, 4)
    words = vocab.quantize(feats)
    assert len(set(words)) == 5                 # each point is its own word


def test_save_load_round_trip(tmp_path):
    feats, _ = _clustered(10, np.eye(6) * 4, 0.2)
    vocab = fit_vocabulary(feats, branching=3, depth=2)
    vocab.save(tmp_path)
    again = VisualVocabulary.load(tmp_path)
    assert (again.branching, again.depth) == (3, 2)
    assert np.array_equal(vocab.quantize(feats), again.quantize(feats))


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="branching"):
        fit_vocabulary(np.zeros((4, 2)), branching=1)
    with pytest.raises(ValueError, match="features"):
        fit_vocabulary(np.zeros((0, 2)))
    with pytest.raises(FileNotFoundError, match="visual_vocab.npz"):
        VisualVocabulary.load("/nonexistent-dir")


def test_stop_words_are_scikit_learns_list_read_without_importing_it():
    import subprocess
    import sys

    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    from trainer.lexicon import DIRECTION_WORDS, stop_words

    assert stop_words() == frozenset(ENGLISH_STOP_WORDS) - DIRECTION_WORDS and "the" in stop_words()
    probe = ("import sys; from trainer.lexicon import stop_words; n = len(stop_words()); "
             "print(n, 'sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert out == [str(len(stop_words())), "False"]
