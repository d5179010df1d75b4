"""Concept profiles of training words, and query nouns rewritten on what the frame encoder saw."""
from __future__ import annotations

import numpy as np
import pytest

from trainer.concepts import CONCEPTS_FILE, WordConcepts
from trainer.encoders.efficientnet import imagenet_labels
from trainer.lexicon import QueryRewriter, caption_vocabulary, classes_under

from .test_lexicon import TRAINING_CAPTIONS


def test_profiles_average_each_words_clips_and_round_trip(tmp_path):
    labels = ("a", "b", "c")
    probs = np.array([[0.8, 0.1, 0.1], [0.2, 0.6, 0.2], [0.4, 0.4, 0.2]], dtype=np.float32)
    concepts = WordConcepts.fit([["circle", "falls"], ["square", "falls"], ["circle"]], probs, labels)
    assert concepts.words == ["circle", "falls", "square"]
    assert np.allclose(concepts.profiles[0], [0.6, 0.25, 0.15]) and np.allclose(concepts.profiles[1], [0.5, 0.35, 0.15])
    assert np.allclose(concepts.base, probs.mean(0))
    (circle,) = concepts.ground([0], ["circle"])
    assert circle.word == "circle" and circle.share == pytest.approx(0.6)
    assert circle.lift == pytest.approx(0.6 / probs[:, 0].mean())
    assert [g.word for g in concepts.ground([1], ["circle", "square", "unknown"])] == ["square", "circle"]
    assert concepts.ground([], ["circle"]) == []

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


def test_imagenet_classes_are_found_under_a_words_senses():
    labels = imagenet_labels()
    balls = {labels[i] for i in classes_under(["ball.n.01"], labels)}
    assert {"tennis ball", "golf ball", "ping-pong ball", "soccer ball"} <= balls
    assert "crate" not in balls and "tabby" not in balls


def _concepts(lift_on: dict[str, float], words: list[str]) -> WordConcepts:
    """Profiles where each word's clips show the game-ball classes `lift_on[word]` times as often as the library."""
    labels = imagenet_labels()
    base = np.full(len(labels), 1.0 / len(labels), dtype=np.float32)
    balls = classes_under(["ball.n.01"], labels)
    profiles = np.tile(base, (len(words), 1))
    for row, word in enumerate(words):
        profiles[row, balls] *= lift_on.get(word, 1.0)
    return WordConcepts(words, profiles, base, labels)


@pytest.fixture(scope="module")
def encode():
    from trainer.encoders.text import TextEncoder

    return TextEncoder(device="cpu").encode


def test_a_noun_no_dictionary_relation_reaches_is_rewritten_on_what_was_seen(encode):
    vocab = caption_vocabulary(TRAINING_CAPTIONS)
    concepts = _concepts({"circle": 5.0, "red": 9.0}, sorted(vocab))
    rewriter = QueryRewriter(vocab, encode, concepts=concepts, min_share=0.0)
    text, subs = rewriter.rewrite("a red ball slides left")
    # "red" clips show the ball classes more, but the captions never use "red" as a noun.
    assert text == "a red circle slides left"
    assert [(s.source, s.target, s.evidence) for s in subs] == [("ball", "circle", "seen")]
    assert 2.0 < subs[0].score <= 5.0     # the lift: at most the boost given to the game-ball classes
    # Without profiles, or with no clear winner, nothing places the word: it is left out.
    unplaced = ("a red slides left", [("ball", "", "unknown")])
    assert _read(QueryRewriter(vocab, encode).rewrite("a red ball slides left")) == unplaced
    tied = QueryRewriter(vocab, encode, concepts=_concepts({"circle": 5.0, "square": 4.0}, sorted(vocab)),
                         min_share=0.0)
    assert _read(tied.rewrite("a red ball slides left")) == unplaced
    weak = QueryRewriter(vocab, encode, concepts=_concepts({"circle": 1.5}, sorted(vocab)), min_share=0.0)
    assert _read(weak.rewrite("a red ball slides left")) == unplaced


def _read(rewritten):
    text, subs = rewritten
    return text, [(s.source, s.target, s.evidence) for s in subs]


def test_dictionary_evidence_outranks_what_was_seen(encode):
    vocab = caption_vocabulary(TRAINING_CAPTIONS)
    # "rhombus" shares a synset with "diamond"; profiles pointing elsewhere do not matter.
    rewriter = QueryRewriter(vocab, encode, concepts=_concepts({"circle": 9.0}, sorted(vocab)), min_share=0.0)
    assert rewriter.rewrite("a red rhombus")[0] == "a red diamond"


def test_bad_grounding_settings_are_named():
    for name in ("min_lift", "min_share", "min_lead"):
        with pytest.raises(ValueError, match=name):
            QueryRewriter({"circle": []}, lambda texts: None, **{name: -1})
