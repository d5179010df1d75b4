"""Query rewriting into a model's training vocabulary, with WordNet and the real MiniLM sentence encoder."""
from __future__ import annotations

import json

import pytest

from trainer.lexicon import (WORDS_FILE, QueryRewriter, caption_vocabulary, load_vocabulary, noun_positions,
                             save_vocabulary, senses, tokens)

TRAINING_CAPTIONS = [
    "a red diamond slides left", "the blue star rises on a striped background", "a green circle falls",
    "two shapes: a white square and a yellow triangle grow", "a purple cross moves to the right",
    "a black circle shrinks on a noisy gray background", "the orange square gets larger",
]


def placed(subs):
    """(source, target) of the substitutions that put words into training words (not those left out)."""
    return [(s.source, s.target) for s in subs if s.target]


@pytest.fixture(scope="module")
def rewriter():
    from trainer.encoders.text import TextEncoder

    encoder = TextEncoder(device="cpu")
    return QueryRewriter(caption_vocabulary(TRAINING_CAPTIONS), encoder.encode)


def test_caption_vocabulary_keeps_content_words_with_their_captions():
    vocab = caption_vocabulary(TRAINING_CAPTIONS + ["a red circle falls"], contexts=2)
    assert "circle" in vocab and "the" not in vocab and "a" not in vocab and "on" not in vocab
    assert vocab["circle"] == ["a green circle falls", "a black circle shrinks on a noisy gray background"]
    assert vocab["diamond"] == ["a red diamond slides left"]
    assert list(vocab) == sorted(vocab)
    assert set(caption_vocabulary(TRAINING_CAPTIONS + ["a red circle falls"], min_count=2)) == {
        "circle", "square", "background", "falls", "red"}


def test_vocabulary_round_trips_beside_a_model(tmp_path):
    vocab = caption_vocabulary(TRAINING_CAPTIONS)
    path = save_vocabulary(vocab, tmp_path)
    assert path == tmp_path / WORDS_FILE and load_vocabulary(tmp_path) == vocab
    assert load_vocabulary(tmp_path / "elsewhere") == {}
    (tmp_path / WORDS_FILE).write_text(json.dumps(["not", "a", "mapping"]))
    with pytest.raises(ValueError, match=WORDS_FILE):
        load_vocabulary(tmp_path)


def test_wordnet_senses_carry_definitions_and_broader_synsets():
    pentagram = senses("pentagram")
    assert pentagram and pentagram[0].pos == "n" and "star" in pentagram[0].gloss
    assert "star.n.05" in pentagram[0].broader             # a pentagram is a kind of star
    assert any(s.name == "rhombus.n.01" for s in senses("diamonds"))   # inflections reduce to the lemma
    assert senses("qwzxv") == ()


def test_the_head_of_a_noun_phrase_is_read_as_a_noun():
    def heads(text):
        words = [m.group() for m in tokens(text)]
        return [words[i] for i in sorted(noun_positions(words))]

    assert heads("in this clip, a purple wedge ascends") == ["clip", "wedge"]
    assert heads("watch as the bright yellow ball rolls") == ["ball"]
    assert heads("wedge it in") == []                      # no determiner: the sentence does not tell


def test_a_noun_is_not_rewritten_through_its_verb_senses(rewriter):
    # "wedge" the verb is a kind of "move"; after an article it is the shape, derived from "triangular".
    text, subs = rewriter.rewrite("a purple wedge rises")
    assert text == "a purple triangle rises" and subs[0].evidence == "related"


def test_rewriter_maps_synonyms_and_kinds_onto_training_words(rewriter):
    text, subs = rewriter.rewrite("A purple rhombus glides left")
    assert text == "A purple diamond slides left"
    assert [(s.source, s.target) for s in subs] == [("rhombus", "diamond"), ("glides", "slides")]
    assert [s.evidence for s in subs] == ["synonym", "synonym"] and all(s.score == 1.0 for s in subs)
    text, _ = rewriter.rewrite("the pentagram ascends over a backdrop")
    assert text == "the star rises over a background"


def test_rewriter_leaves_known_words_and_narrower_targets_alone(rewriter):
    caption = "two shapes: a white square and a yellow triangle grow"
    assert rewriter.rewrite(caption) == (caption, [])
    # "coloured" is broader than "red": rewriting it to a particular colour would invent a constraint.
    text, subs = rewriter.rewrite("a colored shape")
    colours = {"red", "blue", "green", "white", "yellow", "black", "purple", "orange", "gray"}
    assert not colours & set(text.split()) and not colours & {s.target for s in subs}


def test_ties_go_to_the_training_word_inflected_like_the_query_word(rewriter):
    vocab = caption_vocabulary(TRAINING_CAPTIONS + ["two shapes rise"])
    both = QueryRewriter(vocab, rewriter.encode)
    assert both.rewrite("a star ascends")[0] == "a star rises"
    assert both.rewrite("two stars ascend")[0] == "two stars rise"


def test_rewriter_names_bad_settings():
    with pytest.raises(ValueError, match="threshold"):
        QueryRewriter({"circle": []}, lambda texts: None, threshold=0)
    with pytest.raises(ValueError, match="sense_margin"):
        QueryRewriter({"circle": []}, lambda texts: None, sense_margin=-1)


def test_direction_words_and_their_derived_forms_are_found(rewriter):
    vocab = caption_vocabulary(TRAINING_CAPTIONS + ["a blue star goes up", "two shapes move down"])
    assert {"up", "down"} <= set(vocab)          # content in captions, though on the usual stop lists
    directions = QueryRewriter(vocab, rewriter.encode)
    text, subs = directions.rewrite("a white cross floats upward")
    assert text in {"a white cross moves up", "a white cross goes up"}
    assert ("upward", "up", "synonym") in [(s.source, s.target, s.evidence) for s in subs]
    # "-wards" makes a direction of a training word even where WordNet lacks the derived word.
    assert directions.rewrite("a red diamond glides rightwards")[0] == "a red diamond slides right"
    assert directions.rewrite("the green circle drops downward")[0] == "the green circle falls down"


def test_among_equal_relations_the_closer_meaning_wins(rewriter):
    # "drift" is a kind of "move", "go" and (in another sense) "get"; the closest definition decides.
    vocab = caption_vocabulary(TRAINING_CAPTIONS + ["a blue star goes up"])
    text, subs = QueryRewriter(vocab, rewriter.encode).rewrite("a red square drifts leftward")
    assert text in {"a red square moves left", "a red square goes left"}


def test_a_word_before_a_verb_heads_its_phrase():
    def heads(text):
        words = [m.group() for m in tokens(text)]
        return [words[i] for i in sorted(noun_positions(words))]

    # "drifts" and "falls" have noun senses but are mostly verbs; "cross" is mostly a verb but here a noun.
    assert heads("a red square drifts leftward") == ["square"]
    assert heads("a blue cross falls") == ["cross"]
    assert heads("the green cross and the orange square both get larger") == ["cross", "square"]


def test_an_inflected_lemma_has_the_senses_of_its_base_form():
    # "falls" is a lemma of its own (the waterfall), which must not hide the senses of "fall".
    assert {s.name for s in senses("fall")} <= {s.name for s in senses("falls")}


def test_a_noun_becomes_the_one_training_noun_its_definition_names(rewriter):
    text, subs = rewriter.rewrite("a yellow block slides left")
    assert text == "a yellow square slides left"
    assert [(s.source, s.target, s.evidence) for s in subs] == [("block", "square", "described")]
    # The figure sense counts even where the sentence favours another reading of "block".
    subs = rewriter.rewrite("footage of a white block which moves right")[1]
    assert placed(subs) == [("block", "square")]
    # Only a noun is read this way: "dotted" is defined through "dot", but it describes the background.
    assert placed(rewriter.rewrite("a red diamond on a dotted background")[1]) == []


def test_a_relation_counts_only_in_a_sense_the_captions_use(rewriter):
    # WordNet files "person" (a human body) under "shape"; the captions' "shapes" are never bodies.
    vocab = caption_vocabulary(TRAINING_CAPTIONS + ["two shapes rise"])
    text, _ = QueryRewriter(vocab, rewriter.encode).rewrite("a person walks left")
    assert "shapes" not in text


def test_a_descriptive_modifier_and_a_broader_head_name_a_training_noun(rewriter):
    vocab = caption_vocabulary(TRAINING_CAPTIONS + ["two shapes rise"])
    shapes = QueryRewriter(vocab, rewriter.encode)
    # "shape" is broader than "triangle", and "three" is in the triangle's definition: "a three-sided polygon".
    text, subs = shapes.rewrite("a green three-cornered shape rises")
    assert text == "a green triangle rises"
    assert [(s.source, s.target, s.evidence) for s in subs] == [("three-cornered shape", "triangle", "described")]
    assert shapes.rewrite("a five-pointed shape falls")[0] == "a star falls"
    # A head that is no broader than any training noun, or a modifier no definition shares, changes nothing.
    assert shapes.rewrite("a three-legged dog")[0] == "a three-legged dog"
    assert placed(shapes.rewrite("a big shape falls")[1]) == []


def test_a_wordnet_collocation_is_read_whole(rewriter):
    # "plus sign" is one noun; its first word alone must not be rewritten as if it stood by itself.
    _, subs = rewriter.rewrite("a blue plus sign rises")
    assert all(s.source != "plus" for s in subs)


def test_neighbouring_words_that_become_one_training_word_merge(rewriter):
    # "round" and "dot" both read as "circle": one circle, not "circle circle".
    text, subs = rewriter.rewrite("an orange round dot falls")
    assert text == "an orange circle falls"
    assert [(s.source, s.target) for s in subs] == [("round dot", "circle")]


def test_an_indefinite_article_follows_the_new_word(rewriter):
    assert rewriter.rewrite("an azure circle falls")[0] == "a blue circle falls"
    assert rewriter.rewrite("A pentagram rises")[0] == "A star rises"


def test_a_word_set_against_its_antonym_keeps_only_its_contrasting_senses(rewriter):
    # "falls" is in WordNet's "decrease" synset, but captions that also say "rises" mean a motion by it;
    # "shrinks" is the training word for getting smaller.
    for query in ("a red star dwindles", "a red star decreases"):
        _, subs = rewriter.rewrite(query)
        assert "falls" not in [s.target for s in subs], query
    assert rewriter.rewrite("a blue circle descends")[0] == "a blue circle falls"


def test_a_verb_becomes_the_one_training_verb_of_its_kind(rewriter):
    # To dwindle is a kind of decreasing, and of the training verbs only "shrinks" is another kind of it.
    text, subs = rewriter.rewrite("a red star dwindles")
    assert text == "a red star shrinks"
    assert [(s.source, s.target, s.evidence) for s in subs] == [("dwindles", "shrinks", "sibling")]
    # A participle becomes only a training word of its own form, and the captions have no "shrinking".
    assert placed(rewriter.rewrite("a red star dwindling")[1]) == []


def test_a_participle_becomes_only_a_training_word_of_the_same_form(rewriter):
    # To shade is to darken, but a "shaded backdrop" is no "dark" one: an adjective in a participle's place
    # says something else. A plain adjective still becomes one ("crimson" -> "red").
    dark = QueryRewriter(caption_vocabulary(TRAINING_CAPTIONS + ["a blue star on a dark background"]),
                         rewriter.encode)
    assert placed(dark.rewrite("a blue star over a shaded background")[1]) == []
    assert dark.rewrite("a crimson star")[0] == "a red star"


def test_a_figure_becomes_the_one_training_figure_of_its_kind(rewriter):
    # A box (a rectangular drawing) and a square are both rectangles, and no other training shape is one.
    text, subs = rewriter.rewrite("a red box rises")
    assert text == "a red square rises"
    assert [(s.source, s.target, s.evidence) for s in subs] == [("box", "square", "sibling")]
    # A hexagon is a polygon, as are the triangle, the square and the diamond: no single reading.
    assert placed(rewriter.rewrite("a green hexagon rises")[1]) == []


def test_words_no_evidence_places_are_left_out_while_known_words_remain(rewriter):
    text, subs = rewriter.rewrite("footage of a purple plus symbol which rises")
    assert text == "of a purple which rises"
    assert [(s.source, s.target, s.evidence) for s in subs] == [
        ("footage", "", "unknown"), ("plus symbol", "", "unknown")]
    # The article before a left-out word stays; before a rewritten one it follows the new word.
    assert rewriter.rewrite("An azure lozenge rises")[0] == "A blue rises"
    # With nothing the model knows left, the words stay as typed.
    assert rewriter.rewrite("a dog") == ("a dog", [])
    # Only names are left out: the sentence encoder may still carry what a verb or a modifier means.
    assert rewriter.rewrite("a red circle zigzags") == ("a red circle zigzags", [])
    assert rewriter.rewrite("a red circle gets tinier") == ("a red circle gets tinier", [])


def test_punctuation_ends_a_noun_phrase():
    words = "a square colored white drifts leftward".split()
    assert [words[i] for i in noun_positions(words)] == ["drifts"]     # read as one long phrase
    assert [words[i] for i in noun_positions(words, frozenset({2, 4}))] == ["square"]   # "a square, colored white,"


def test_a_rewrite_keeps_the_query_words_inflection(rewriter):
    # "shrink" (from "two shapes shrink") may be the form whose senses match best; the query's grammar decides.
    both = QueryRewriter(caption_vocabulary(TRAINING_CAPTIONS + ["two shapes shrink"]), rewriter.encode)
    assert both.rewrite("a white cross decreases in size")[0] == "a white cross shrinks in size"
    assert both.rewrite("two circles dwindle")[0] == "two circles shrink"
