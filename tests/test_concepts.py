"""Concept profiles of training words: what the frame encoder saw behind each, saved beside the model."""
from __future__ import annotations

import numpy as np
import pytest

from trainer.concepts import CONCEPTS_FILE, WordConcepts


def test_profiles_average_each_words_clips_and_round_trip(tmp_path):
    labels = ("a", "b", "c")
    probs = np.array([[0.8, 0.1, 0.1], [0.2, 0.6, 0.2], [0.4, 0.4, 0.2]], dtype=np.float32)
    concepts = WordConcepts.fit([["circle", "falls"], ["square", "falls"], ["circle"]], probs, labels)
    assert concepts.words == ["circle", "falls", "square"]
    assert np.allclose(concepts.profiles[0], [0.6, 0.25, 0.15]) and np.allclose(concepts.profiles[1], [0.5, 0.35, 0.15])
    assert np.allclose(concepts.base, probs.mean(0))

    concepts.save(tmp_path)
    again = WordConcepts.load(tmp_path)
    assert again.words == concepts.words and again.labels == labels
    assert np.allclose(again.profiles, concepts.profiles, atol=1e-3) and np.allclose(again.base, concepts.base)
    assert WordConcepts.load(tmp_path / "nowhere") is None


def test_a_damaged_profiles_file_is_named(tmp_path):
    (tmp_path / CONCEPTS_FILE).write_bytes(b"not an npz")
    with pytest.raises(ValueError, match=CONCEPTS_FILE):
        WordConcepts.load(tmp_path)
    with pytest.raises(ValueError, match="do not match"):
        WordConcepts(["circle"], np.zeros((2, 3)), np.zeros(3), ("a", "b", "c"))
