"""Representative class selection (step S): hand-made matrices with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from repcam.method.selection import (
    PAPER_NUM_OTHERS,
    RANK_A,
    RANK_B,
    _refine,
    affinity,
    all_select,
    cluster_select,
    improved_kmeans,
    random_select,
    rank_select,
    ranked_others,
    scaled_positions,
    similarity_matrix,
    topk_select,
)


def _assert_valid(selection: dict[int, list[int]], num_classes: int, n: int) -> None:
    assert sorted(selection) == list(range(num_classes))
    for i, chosen in selection.items():
        assert len(chosen) == n
        assert i not in chosen
        assert len(set(chosen)) == n
        assert all(isinstance(j, int) and 0 <= j < num_classes for j in chosen)


def _planted(sizes: list[int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A symmetric affinity with strong blocks of the given sizes (shuffled) plus uniform noise."""
    rng = np.random.default_rng(seed)
    truth = rng.permutation(np.repeat(np.arange(len(sizes)), sizes))
    noise = 0.2 * rng.random((len(truth), len(truth)))
    A = (noise + noise.T) / 2 + 0.5 * (truth[:, None] == truth[None, :])
    return A, truth


# --------------------------------------------------------------------------- similarity_matrix

# Three classes. Images 0-1: class 0; image 2: class 1; image 3: classes 0 and 1; image 4: none.
PROBS = np.array(
    [
        [0.7, 0.2, 0.1],
        [0.6, 0.3, 0.1],
        [0.1, 0.8, 0.1],
        [0.5, 0.4, 0.1],
        [0.2, 0.2, 0.6],
    ]
)
LABELS = np.array(
    [
        [1, 0, 0],
        [1, 0, 0],
        [0, 1, 0],
        [1, 1, 0],
        [0, 0, 0],
    ],
    dtype=bool,
)


def test_similarity_single_label_uses_only_single_label_images():
    B = similarity_matrix(PROBS, LABELS)
    expected = np.array(
        [
            [0.7 + 0.6, 0.2 + 0.3, 0.1 + 0.1],
            [0.1, 0.8, 0.1],
            [0.0, 0.0, 0.0],  # no image of class 2
        ]
    )
    np.testing.assert_allclose(B, expected)


def test_similarity_multilabel_true_positive_is_not_confusion():
    B = similarity_matrix(PROBS, LABELS.astype(int), multilabel=True)
    expected = np.array(
        [
            # image 3 adds to the diagonal (0.5) and to B[0, 2], but not to B[0, 1]: it contains class 1
            [0.7 + 0.6 + 0.5, 0.2 + 0.3, 0.1 + 0.1 + 0.1],
            [0.1, 0.8 + 0.4, 0.1 + 0.1],
            [0.0, 0.0, 0.0],
        ]
    )
    np.testing.assert_allclose(B, expected)


@pytest.mark.parametrize(
    ("probs", "labels", "match"),
    [
        (PROBS, LABELS[:, :2], "does not match"),
        (PROBS[0], LABELS[0], r"\(n_images, C\)"),
        (PROBS * 10 - 3, LABELS, r"\[0, 1\]"),
        (PROBS, LABELS * 2, "0/1"),
    ],
)
def test_similarity_rejects_bad_input(probs, labels, match):
    with pytest.raises(ValueError, match=match):
        similarity_matrix(probs, labels)


# --------------------------------------------------------------------------- affinity / ranking


def test_affinity_row_normalised_symmetric_zero_diagonal():
    B = np.array([[2.0, 1.0, 1.0], [1.0, 3.0, 0.0], [0.0, 0.0, 0.0]])
    A = affinity(B)
    # P = [[.5, .25, .25], [.25, .75, 0], [0, 0, 0]]; A = (P + P.T) / 2, zero diagonal
    expected = np.array([[0.0, 0.25, 0.125], [0.25, 0.0, 0.0], [0.125, 0.0, 0.0]])
    np.testing.assert_allclose(A, expected)
    np.testing.assert_array_equal(A, A.T)
    assert np.isfinite(A).all()


def test_affinity_all_zero_stays_zero():
    np.testing.assert_array_equal(affinity(np.zeros((4, 4))), np.zeros((4, 4)))


def test_ranked_others_ties_by_index_and_excludes_self():
    B = np.array(
        [
            [9.0, 1.0, 2.0, 2.0, 1.0],
            [0.0, 0.0, 0.0, 0.0, 0.0],
            [1.0, 1.0, 1.0, 5.0, 0.0],
            [0.0, 0.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 0.0, 0.0],
        ]
    )
    assert ranked_others(B, 0) == [2, 3, 1, 4]
    assert ranked_others(B, 1) == [0, 2, 3, 4]
    assert ranked_others(B, 2) == [3, 0, 1, 4]
    with pytest.raises(ValueError, match="out of range"):
        ranked_others(B, 5)


# --------------------------------------------------------------------------- rank selection


def test_scaled_positions_unchanged_for_voc():
    assert PAPER_NUM_OTHERS == 19
    assert scaled_positions(RANK_A, 19) == ([3, 9, 14, 17], None)
    assert scaled_positions(RANK_B, 79) == ([3, 8, 13, 18], None)
    assert scaled_positions(RANK_B, 18) == ([3, 8, 13, 18], None)


def test_scaled_positions_nine_and_four_others():
    assert scaled_positions(RANK_A, 9) == (
        [1, 4, 7, 8],
        "Rank-a positions [3, 9, 14, 17] scaled to [1, 4, 7, 8] for 9 other classes",
    )
    assert scaled_positions(RANK_B, 9) == (
        [1, 4, 6, 9],
        "Rank-b positions [3, 8, 13, 18] scaled to [1, 4, 6, 9] for 9 other classes",
    )
    assert scaled_positions(RANK_A, 4)[0] == [1, 2, 3, 4]
    assert scaled_positions(RANK_B, 4) == (
        [1, 2, 3, 4],
        "Rank-b positions [3, 8, 13, 18] scaled to [1, 2, 3, 4] for 4 other classes",
    )


def test_scaled_positions_resolves_collisions():
    # [4, 5, 5] -> pushed forward to [4, 5, 6] -> past the end, pushed back to [3, 4, 5]
    positions, note = scaled_positions([17, 18, 19], 5)
    assert positions == [3, 4, 5]
    assert note is not None and note.startswith("Rank positions [17, 18, 19]")
    # [0 -> 1, 1, 1, 5] -> [1, 2, 3, 5]
    assert scaled_positions([1, 2, 3, 19], 5)[0] == [1, 2, 3, 5]


def test_scaled_positions_errors():
    with pytest.raises(ValueError, match="picks 4 classes.*only 3 other classes"):
        scaled_positions(RANK_A, 3)
    with pytest.raises(ValueError, match="strictly increasing"):
        scaled_positions([3, 3, 5], 19)


def test_rank_select_picks_exact_positions():
    C = 20
    idx = np.arange(C)
    # Class i ranks the others i+1, i+2, ... (mod C), so position p is class (i + p) % C.
    B = -((idx[None, :] - idx[:, None]) % C).astype(float)
    B[idx, idx] = 100.0  # a large self-similarity must not be selected
    selection, note = rank_select(B, RANK_A)
    assert note is None
    assert selection == {i: [(i + p) % C for p in RANK_A] for i in range(C)}
    selection, _ = rank_select(B, RANK_B)
    assert selection[5] == [8, 13, 18, 3]
    _assert_valid(selection, C, 4)


def test_rank_select_scales_for_few_classes():
    C = 10
    idx = np.arange(C)
    B = -((idx[None, :] - idx[:, None]) % C).astype(float)
    selection, note = rank_select(B, RANK_A)
    assert note == "Rank-a positions [3, 9, 14, 17] scaled to [1, 4, 7, 8] for 9 other classes"
    assert selection[0] == [1, 4, 7, 8]
    assert selection[6] == [7, 0, 3, 4]


# --------------------------------------------------------------------------- baselines


def test_random_select_seeded_valid_and_checked():
    a = random_select(20, 4, seed=0)
    assert a == random_select(20, 4, seed=0)
    assert a != random_select(20, 4, seed=1)
    _assert_valid(a, 20, 4)
    full = random_select(5, 4, seed=3)
    assert full == all_select(5)
    with pytest.raises(ValueError, match="N=5.*4 other classes"):
        random_select(5, 5, seed=0)


def test_all_select():
    assert all_select(3) == {0: [1, 2], 1: [0, 2], 2: [0, 1]}


def test_topk_select_nan_and_ties():
    nan = np.nan
    S = np.array(
        [
            [99.0, 0.5, 0.5, 0.2],  # the diagonal is ignored even when large
            [0.1, nan, nan, 0.3],
            [0.9, 0.9, nan, 0.9],
            [nan, nan, 0.4, nan],
        ]
    )
    assert topk_select(S, 2) == {0: [1, 2], 1: [3, 0], 2: [0, 1], 3: [2]}
    assert topk_select(S, 1) == {0: [1], 1: [3], 2: [0], 3: [2]}
    with pytest.raises(ValueError, match="k must be"):
        topk_select(S, 4)


# --------------------------------------------------------------------------- improved k-means


@pytest.mark.parametrize("seed", range(5))
def test_improved_kmeans_recovers_planted_blocks(seed):
    A, truth = _planted([5, 5, 5, 5], seed)
    labels = improved_kmeans(A, 4, seed=seed)
    assert adjusted_rand_score(truth, labels) == 1.0
    assert labels[0] == 0 and set(labels.tolist()) == {0, 1, 2, 3}


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("sizes", [[3, 3, 3, 3], [4, 4, 4]])
def test_improved_kmeans_recovers_blocks_at_the_minimum_size(seed, sizes):
    # Every cluster starts (and must stay) at the minimum size, so single moves are all blocked: only
    # exchanges can reach the planted partition (the demo's 12 classes in 4 groups of 3).
    A, truth = _planted(sizes, seed)
    labels = improved_kmeans(A, len(sizes), min_size=4, seed=seed, n_init=1)
    assert adjusted_rand_score(truth, labels) == 1.0


def test_improved_kmeans_exchange_needs_a_gain():
    # Uniform affinity: no exchange raises the within-cluster affinity, so the start stays as it is.
    A = np.ones((6, 6))
    start = improved_kmeans(A, 2, min_size=3, seed=4, n_init=1)
    assert np.bincount(start).tolist() == [3, 3]


@pytest.mark.parametrize("seed", range(3))
def test_improved_kmeans_respects_min_size(seed):
    # Two tight triples: without the constraint they end up in clusters of fewer than 4 classes.
    A, _ = _planted([7, 7, 3, 3], seed)
    free = improved_kmeans(A, 4, min_size=1, seed=seed)
    assert np.bincount(free).min() < 4
    constrained = improved_kmeans(A, 4, min_size=4, seed=seed)
    assert np.bincount(constrained, minlength=4).min() >= 4


def test_improved_kmeans_min_size_capped_by_class_count():
    # 10 classes in 3 clusters cannot all have 4 members; the floor becomes 10 // 3 = 3.
    A, _ = _planted([8, 1, 1], 0)
    labels = improved_kmeans(A, 3, min_size=4)
    assert sorted(np.bincount(labels).tolist()) == [3, 3, 4]


def test_improved_kmeans_deterministic():
    A, _ = _planted([4, 6, 5, 5], 7)
    A += 0.3 * np.random.default_rng(1).random(A.shape)  # weaker structure: restarts matter
    for seed in (0, 3):
        np.testing.assert_array_equal(improved_kmeans(A, 4, seed=seed), improved_kmeans(A, 4, seed=seed))


# Symmetric and non-negative (like affinity()), yet the sequential moves oscillate:
# from clusters {1, 3}, {0, 2} the passes visit {3}|{0,1,2}, {0}|{1,2,3}, {0,2,3}|{1}, {0}|{1,2,3}, ...
OSCILLATING = 1.0 + np.array(
    [
        [0.0, -0.67, 0.45, -0.04],
        [-0.67, 0.0, 0.56, -0.22],
        [0.45, 0.56, 0.0, 0.29],
        [-0.04, -0.22, 0.29, 0.0],
    ]
)


def test_improved_kmeans_cycle_guard():
    A = OSCILLATING.copy()
    np.fill_diagonal(A, 0.0)
    labels, reason = _refine(A, np.array([1, 0, 1, 0]), n_clusters=2, min_size=1, max_iter=1000)
    assert reason == "cycle"
    # Without the guard this would run a million passes.
    labels = improved_kmeans(OSCILLATING, 2, min_size=1, max_iter=10**6)
    assert sorted(np.bincount(labels).tolist()) in ([1, 3], [2, 2])


def test_improved_kmeans_all_equal_ties():
    A = np.full((10, 10), 0.3)
    labels = improved_kmeans(A, 3)
    # Nothing is strictly better anywhere, so the balanced random start is kept.
    assert sorted(np.bincount(labels).tolist()) == [3, 3, 4]
    assert labels[0] == 0
    np.testing.assert_array_equal(labels, improved_kmeans(A, 3))


def test_improved_kmeans_edge_counts_and_errors():
    A, _ = _planted([3, 3], 0)
    np.testing.assert_array_equal(improved_kmeans(A, 1), np.zeros(6, dtype=int))
    np.testing.assert_array_equal(improved_kmeans(A, 6), np.arange(6))
    for bad in (0, 7):
        with pytest.raises(ValueError, match="n_clusters"):
            improved_kmeans(A, bad)


# --------------------------------------------------------------------------- cluster selection

# Class 6 is alone in its cluster.
CLUSTERS = np.array([0, 0, 0, 0, 1, 1, 2])
# Every class finds larger indices more similar: ranked_others(i) is descending index.
B_BY_INDEX = np.tile(np.arange(7, dtype=float), (7, 1))


def test_cluster_select_kth_per_cluster():
    sel = cluster_select(B_BY_INDEX, CLUSTERS, k=1)
    assert sel[0] == [3, 5, 6]
    assert sel[3] == [2, 5, 6]  # 3 itself is skipped in its own cluster
    sel = cluster_select(B_BY_INDEX, CLUSTERS, k=2)
    # cluster 0 minus class 0 ranks 3, 2, 1 -> 2; cluster 1 ranks 5, 4 -> 4; cluster 2 has only 6
    assert sel[0] == [2, 4, 6]
    _assert_valid(sel, 7, 3)


def test_cluster_select_uses_row_of_the_class():
    B = B_BY_INDEX.copy()
    B[1] = -np.arange(7)  # class 1 prefers small indices
    assert cluster_select(B, CLUSTERS, k=1)[1] == [0, 4, 6]


def test_cluster_select_k_beyond_cluster_size():
    sel = cluster_select(B_BY_INDEX, CLUSTERS, k=10)
    assert sel[0] == [1, 4, 6]  # the last (least similar) of each cluster
    assert sel[4] == [0, 5, 6]


def test_cluster_select_singleton_own_cluster_is_filled():
    # Class 6 has no candidate in its cluster: fill with its most similar class not chosen yet.
    assert cluster_select(B_BY_INDEX, CLUSTERS, k=1)[6] == [3, 5, 4]
    assert cluster_select(B_BY_INDEX, CLUSTERS, k=2)[6] == [2, 4, 5]
    _assert_valid(cluster_select(B_BY_INDEX, CLUSTERS, k=2), 7, 3)


def test_cluster_select_ties_and_errors():
    sel = cluster_select(np.ones((7, 7)), CLUSTERS, k=1)
    assert sel[0] == [1, 4, 6]
    assert sel[6] == [0, 4, 1]
    with pytest.raises(ValueError, match="distinct classes"):
        cluster_select(np.ones((3, 3)), np.array([0, 1, 2]), k=1)
    with pytest.raises(ValueError, match="k must be"):
        cluster_select(B_BY_INDEX, CLUSTERS, k=0)


def test_kmeans_then_cluster_select_end_to_end():
    A, truth = _planted([5, 5, 5, 5], 11)
    labels = improved_kmeans(A, 4, seed=0)
    sel = cluster_select(A, labels, k=2)
    _assert_valid(sel, 20, 4)
    for i, chosen in sel.items():
        assert sorted(truth[chosen].tolist()) == [0, 1, 2, 3]  # one class from every block
