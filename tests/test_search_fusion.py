"""Reciprocal rank fusion, max-merging, grouping and paging on hand-made rankings."""
import pytest

from search.fusion import (best_per_group, evidence, evidence_fusion, merge_max, page, reciprocal_rank_fusion,
                           settled_max)


def test_rrf_scores_match_the_formula():
    fused = dict(reciprocal_rank_fusion([[1, 2, 3], [3, 1]], k=60))
    assert fused[1] == pytest.approx(1 / 61 + 1 / 62)
    assert fused[2] == pytest.approx(1 / 62)
    assert fused[3] == pytest.approx(1 / 63 + 1 / 61)


def test_rrf_rewards_agreement_over_one_top_rank():
    # 7 is first in one list only; 5 is second in both, so fusion puts it first.
    fused = [item for item, _ in reciprocal_rank_fusion([[7, 5, 9], [8, 5, 9]])]
    assert fused[0] == 5
    assert set(fused) == {5, 7, 8, 9}


def test_rrf_ties_break_by_best_rank_then_id():
    fused = [item for item, _ in reciprocal_rank_fusion([[4, 2], [2, 4]])]
    assert fused == [2, 4]            # equal scores, equal best rank: lower id first
    fused = [item for item, _ in reciprocal_rank_fusion([[3], [1], [2, 9]])]
    assert fused[:3] == [1, 2, 3]     # all three at rank 1 once


def test_rrf_counts_duplicates_once_and_weights_lists():
    fused = dict(reciprocal_rank_fusion([[1, 1, 2]]))
    assert fused[1] == pytest.approx(1 / 61)
    assert fused[2] == pytest.approx(1 / 63)
    weighted = [i for i, _ in reciprocal_rank_fusion([[1], [2]], weights=[1.0, 2.0])]
    assert weighted == [2, 1]


def test_rrf_rejects_bad_arguments():
    with pytest.raises(ValueError, match="rrf k"):
        reciprocal_rank_fusion([[1]], k=0)
    with pytest.raises(ValueError, match="weights"):
        reciprocal_rank_fusion([[1], [2]], weights=[1.0])
    assert reciprocal_rank_fusion([]) == []


def test_merge_max_keeps_best_score_per_id():
    merged = merge_max([(1, 0.2), (2, 0.9)], [(1, 0.5), (3, 0.1)])
    assert merged == [(2, 0.9), (1, 0.5), (3, 0.1)]


def test_best_per_group_keeps_first_of_each_group_in_order():
    ranked = [("a", 1), ("b", 1), ("c", 2), ("d", 3), ("e", 2)]
    assert best_per_group(ranked, key=lambda x: x[1]) == [("a", 1), ("c", 2), ("d", 3)]


def test_page_slices_and_checks_bounds():
    items = list(range(10))
    assert page(items, 0, 3) == [0, 1, 2]
    assert page(items, 8, 5) == [8, 9]
    assert page(items, 20, 5) == []
    with pytest.raises(ValueError):
        page(items, -1, 3)


def test_settled_max_stops_where_an_unseen_item_could_still_rank():
    clips = ([(1, 0.9), (2, 0.8)], False)          # cut at depth 2: unseen clips score <= 0.8
    captions = ([(3, 0.95), (4, 0.1)], True)       # ran dry: nothing more to come
    merged = merge_max(clips[0], captions[0])
    assert [i for i, _ in merged] == [3, 1, 2, 4]
    assert settled_max([clips, captions], merged) == 3    # 4 (0.1) could be passed by an unseen clip at 0.7
    assert settled_max([(clips[0], True), captions], merged) == 4


def test_evidence_is_the_margin_over_chance_as_a_share_of_the_best_margin():
    assert evidence([(1, 0.9), (2, 0.5), (3, 0.3)], floor=0.1) == pytest.approx([1.0, 0.5, 0.25])
    assert evidence([(1, 0.9), (2, 0.5)], floor=float("-inf")) == [1.0, 1.0]     # no floor: plain RRF
    assert evidence([(1, 0.1)], floor=0.1) == [1.0] and evidence([], floor=0.0) == []


def test_strong_evidence_in_two_channels_outranks_weak_evidence_in_three():
    # Channels with chance floors 0.3 (dense), 0 (keyword) and 0.001 (concept). Clip 9 is what dense ranks
    # first, barely above chance, and what keyword and concept find weakly at rank 2; clip 5 is first by far in
    # keyword and concept and absent from dense. Plain RRF counts votes and puts 9 first.
    dense = [(9, 0.31), (4, 0.305)]
    keyword = [(5, 8.0), (9, 0.5)]
    concept = [(5, 0.6), (9, 0.01)]
    votes = [c for c, _ in reciprocal_rank_fusion([[c for c, _ in ch] for ch in (dense, keyword, concept)])]
    assert votes[0] == 9
    fused = evidence_fusion([dense, keyword, concept], [0.3, 0.0, 0.001])
    assert [c for c, _ in fused][:2] == [5, 9]
    assert dict(fused)[5] == pytest.approx(2 / 61)          # the best of two channels: a full vote in each


def test_evidence_fusion_of_equal_evidence_is_rrf_and_checks_its_arguments():
    lists = [[(1, 0.5), (2, 0.5)], [(2, 0.7), (1, 0.7)]]
    assert evidence_fusion(lists, [0.0, 0.0]) == reciprocal_rank_fusion([[1, 2], [2, 1]])
    with pytest.raises(ValueError, match="floors"):
        evidence_fusion(lists, [0.0])
