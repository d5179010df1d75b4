"""The training vocabulary saved beside a model: content words with captions they occur in."""
from __future__ import annotations

import json

import pytest

from trainer.lexicon import WORDS_FILE, caption_vocabulary, content_words, load_vocabulary, save_vocabulary

CAPTIONS = [
    "a red diamond slides left", "the blue star rises on a striped background", "a green circle falls",
    "two shapes: a white square and a yellow triangle grow", "a purple cross moves to the right",
    "a black circle shrinks on a noisy gray background", "the orange square gets larger",
]


def test_caption_vocabulary_keeps_content_words_with_their_captions():
    vocab = caption_vocabulary(CAPTIONS + ["a red circle falls"], contexts=2)
    assert "circle" in vocab and "the" not in vocab and "a" not in vocab and "on" not in vocab
    assert vocab["circle"] == ["a green circle falls", "a black circle shrinks on a noisy gray background"]
    assert vocab["diamond"] == ["a red diamond slides left"]
    assert list(vocab) == sorted(vocab)
    assert set(caption_vocabulary(CAPTIONS + ["a red circle falls"], min_count=2)) == {
        "circle", "square", "background", "falls", "red"}
    assert content_words("it moves up") == {"moves", "up"}          # direction words are content in captions


def test_vocabulary_round_trips_beside_a_model(tmp_path):
    vocab = caption_vocabulary(CAPTIONS)
    path = save_vocabulary(vocab, tmp_path)
    assert path == tmp_path / WORDS_FILE and load_vocabulary(tmp_path) == vocab
    assert load_vocabulary(tmp_path / "elsewhere") == {}
    (tmp_path / WORDS_FILE).write_text(json.dumps(["not", "a", "mapping"]))
    with pytest.raises(ValueError, match=WORDS_FILE):
        load_vocabulary(tmp_path)
