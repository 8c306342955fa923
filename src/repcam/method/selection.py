"""Representative class selection (step S, Sec. 3.1 of the paper).

For each class ``i`` we pick N other classes; the CAM of ``i`` is then built from the N binary
models (i, s_k). Strategies: fixed rank positions in the similarity order (Rank-a / Rank-b,
Sec. 3.1.1), the k-th most similar class of each cluster of an improved k-means (S-k, Sec. 3.1.3),
random, all classes, and the top-k oracle of Table 1.

Everything here is pure numpy and deterministic for a given seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

RANK_A: tuple[int, ...] = (3, 9, 14, 17)
"""Rank-a: 1-based positions in the list of other classes sorted by similarity, most similar first."""
RANK_B: tuple[int, ...] = (3, 8, 13, 18)
"""Rank-b: as Rank-a."""
PAPER_NUM_OTHERS = 19
"""The paper's rank positions refer to the 19 other classes of PASCAL VOC."""

Selection = dict[int, list[int]]
"""Class index -> its representative class indices (never the class itself, no duplicates)."""

# Average affinities are compared up to this relative slack, so that float round-off in a mean
# (e.g. mean of four 0.3s vs five 0.3s) is never taken for a real improvement.
_REL_TOL = 1e-12


# --------------------------------------------------------------------------- validation helpers


def _as_square(M: np.ndarray, name: str, allow_nan: bool = False) -> np.ndarray:
    M = np.asarray(M, dtype=np.float64)
    if M.ndim != 2 or M.shape[0] != M.shape[1]:
        raise ValueError(f"{name} must be a square (C, C) matrix, got shape {M.shape}")
    if M.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 classes, got {M.shape[0]}")
    bad = np.isinf(M) if allow_nan else ~np.isfinite(M)
    if bad.any():
        raise ValueError(f"{name} has {int(bad.sum())} non-finite entries")
    return M


def _check_class(i: int, num_classes: int) -> None:
    if not 0 <= i < num_classes:
        raise ValueError(f"class index {i} out of range for {num_classes} classes")


def _order_desc(scores: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """``candidates`` sorted by ``scores`` descending, ties by the smaller index."""
    candidates = np.sort(candidates)
    # A stable sort on the negated scores keeps the ascending index order within ties.
    return candidates[np.argsort(-scores[candidates], kind="stable")]


# --------------------------------------------------------------------------- similarity (3.1.2)


def similarity_matrix(probs: np.ndarray, labels: np.ndarray, multilabel: bool = False) -> np.ndarray:
    """Class similarity from false classification (Eq. 2): ``B[i, j] = sum_{images of i} probs[:, j]``.

    Args:
        probs: (n_images, C) class probabilities (softmax for a single-label model, sigmoid for a
            multi-label one).
        labels: (n_images, C) bool (or 0/1) image-level labels.
        multilabel: if False only images with exactly one label contribute, to the row of that
            label (the paper trains the similarity model on single-label images). If True every
            image contributes to the row of each class ``i`` it contains, but ``B[i, j]`` (j != i)
            only sums images that do not contain ``j``: a true positive for ``j`` is not a
            confusion of ``i`` with ``j``. The diagonal sums ``probs[:, i]`` over the images of ``i``.

    Returns:
        (C, C) float64 matrix; row ``i`` is zero when no image contributes to class ``i``.
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    if probs.ndim != 2:
        raise ValueError(f"probs must be (n_images, C), got shape {probs.shape}")
    if labels.shape != probs.shape:
        raise ValueError(f"labels shape {labels.shape} does not match probs shape {probs.shape}")
    if not np.isfinite(probs).all():
        raise ValueError("probs has non-finite entries")
    # Logits passed by mistake are the likely error here; they fall outside [0, 1].
    if probs.size and (probs.min() < -1e-6 or probs.max() > 1 + 1e-6):
        raise ValueError(
            f"probs must be probabilities in [0, 1] (softmax/sigmoid outputs), "
            f"got range [{probs.min():.3g}, {probs.max():.3g}]"
        )
    if labels.dtype != np.bool_:
        if labels.size and not np.isin(labels, (0, 1)).all():
            raise ValueError("labels must be a bool or 0/1 matrix")
        labels = labels.astype(bool)

    L = labels.astype(np.float64)
    if not multilabel:
        L = L * (labels.sum(1, keepdims=True) == 1)
        return L.T @ probs
    # Off-diagonal: mask out the probabilities of classes the image actually contains.
    B = L.T @ (probs * (1.0 - L))
    B[np.diag_indices_from(B)] = (L * probs).sum(0)
    return B


def affinity(B: np.ndarray) -> np.ndarray:
    """Symmetric class affinity used for clustering, from the similarity matrix ``B``.

    1. Row-normalise: ``P[i] = B[i] / sum_j B[i, j]`` (diagonal included). For a softmax model the
       row sum is the number of images of class ``i``, so ``P[i, j]`` is the mean probability that
       an image of ``i`` is classified as ``j``; this removes the bias of ``B`` towards classes
       with many images. Rows summing to 0 (no images) stay 0.
    2. Symmetrise: ``A = (P + P.T) / 2``; the confusion i -> j and j -> i are equally evidence
       that the two classes are alike.
    3. Set the diagonal to 0 (self-affinity is not used by the clustering).
    """
    B = _as_square(B, "B")
    totals = B.sum(1, keepdims=True)
    P = np.divide(B, totals, out=np.zeros_like(B), where=totals != 0)
    A = (P + P.T) / 2
    np.fill_diagonal(A, 0.0)
    return A


def ranked_others(B: np.ndarray, i: int) -> list[int]:
    """The classes other than ``i`` sorted by ``B[i, j]`` descending, ties by the smaller index."""
    B = _as_square(B, "B")
    _check_class(i, B.shape[0])
    others = np.delete(np.arange(B.shape[0]), i)
    return [int(j) for j in _order_desc(B[i], others)]


# --------------------------------------------------------------------------- rank selection (3.1.1)


def _positions_name(positions: Sequence[int]) -> str:
    return {RANK_A: "Rank-a", RANK_B: "Rank-b"}.get(tuple(positions), "Rank")


def scaled_positions(
    positions: Sequence[int], num_others: int, reference: int = PAPER_NUM_OTHERS
) -> tuple[list[int], str | None]:
    """Fit 1-based rank ``positions`` defined for ``reference`` other classes to ``num_others``.

    Positions that exist are kept as they are (note ``None``). Otherwise each ``p`` becomes
    ``round(p * num_others / reference)`` (half up), clamped to ``[1, num_others]``, then made
    strictly increasing: collisions push later positions forward, and if that runs past
    ``num_others`` earlier ones are pushed back. The note says what was changed, for logs.
    """
    pos = [int(p) for p in positions]
    if not pos:
        raise ValueError("positions must not be empty")
    if pos[0] < 1 or any(b <= a for a, b in zip(pos, pos[1:])):
        raise ValueError(f"positions must be strictly increasing 1-based ranks, got {pos}")
    if reference < 1:
        raise ValueError(f"reference must be >= 1, got {reference}")
    if len(pos) > num_others:
        raise ValueError(
            f"{_positions_name(pos)} picks {len(pos)} classes, at the fixed rank positions {pos} of {reference} other "
            f"classes (selection.n does not apply to it), but each class has only {num_others} other classes; "
            "remove it from selection.methods or use more classes"
        )
    if num_others >= pos[-1]:
        return pos, None

    # floor(x + 0.5) rather than round(): Python rounds halves to even, which is surprising here.
    out = [min(max(int(np.floor(p * num_others / reference + 0.5)), 1), num_others) for p in pos]
    for k in range(1, len(out)):
        out[k] = max(out[k], out[k - 1] + 1)
    out[-1] = min(out[-1], num_others)
    for k in range(len(out) - 2, -1, -1):
        out[k] = min(out[k], out[k + 1] - 1)
    note = (
        f"{_positions_name(pos)} positions {pos} scaled to {out} for {num_others} other classes"
    )
    return out, note


def rank_select(B: np.ndarray, positions: Sequence[int]) -> tuple[Selection, str | None]:
    """Rank-a/Rank-b: the classes at fixed 1-based ``positions`` of each class's similarity order.

    Positions are rescaled with :func:`scaled_positions` when there are fewer other classes than
    the largest position; the returned note says so (``None`` when nothing was rescaled).
    """
    B = _as_square(B, "B")
    num_classes = B.shape[0]
    pos, note = scaled_positions(positions, num_classes - 1)
    selection = {}
    for i in range(num_classes):
        order = ranked_others(B, i)
        selection[i] = [order[p - 1] for p in pos]
    return selection, note


# --------------------------------------------------------------------------- baselines


def random_select(num_classes: int, n: int, seed: int) -> Selection:
    """``n`` distinct random other classes per class (the paper's "Random"), sorted ascending."""
    if num_classes < 2:
        raise ValueError(f"need at least 2 classes, got {num_classes}")
    if not 1 <= n <= num_classes - 1:
        raise ValueError(
            f"cannot select N={n} classes: each class has {num_classes - 1} other classes"
        )
    rng = np.random.default_rng(seed)
    selection = {}
    for i in range(num_classes):
        others = np.delete(np.arange(num_classes), i)
        selection[i] = sorted(int(j) for j in rng.choice(others, size=n, replace=False))
    return selection


def all_select(num_classes: int) -> Selection:
    """Every other class (the "all classes" setting)."""
    if num_classes < 2:
        raise ValueError(f"need at least 2 classes, got {num_classes}")
    return {i: [j for j in range(num_classes) if j != i] for i in range(num_classes)}


def topk_select(pair_scores: np.ndarray, k: int) -> Selection:
    """Oracle of Table 1: for each ``i`` the ``k`` classes ``j`` with the best ``pair_scores[i, j]``.

    ``pair_scores[i, j]`` is the mIoU of class ``i``'s maps from the (i, j) binary model; the
    diagonal is ignored and NaN marks pairs without a score, which are never selected (so a class
    with fewer than ``k`` scored partners gets fewer than ``k``). Ties go to the smaller index.
    """
    S = _as_square(pair_scores, "pair_scores", allow_nan=True)
    num_classes = S.shape[0]
    if not 1 <= k <= num_classes - 1:
        raise ValueError(f"k must be in [1, {num_classes - 1}], got {k}")
    selection = {}
    for i in range(num_classes):
        cand = np.array([j for j in range(num_classes) if j != i and not np.isnan(S[i, j])], dtype=int)
        selection[i] = [int(j) for j in _order_desc(S[i], cand)[:k]]
    return selection


# --------------------------------------------------------------------------- clustering (3.1.3)


def _canonical(labels: np.ndarray) -> np.ndarray:
    """Renumber clusters in order of first appearance (so equal partitions compare equal)."""
    mapping: dict[int, int] = {}
    return np.array([mapping.setdefault(int(c), len(mapping)) for c in labels], dtype=np.int64)


def _within_affinity(A: np.ndarray, labels: np.ndarray) -> float:
    same = labels[:, None] == labels[None, :]
    return float((A * same).sum())


def _best_swap(A: np.ndarray, labels: np.ndarray, i: int, target: int, tol: float) -> int | None:
    """The member ``j`` of cluster ``target`` whose exchange with class ``i`` raises the total within-cluster
    affinity the most, or None if no exchange raises it.

    A move that would leave ``i``'s cluster below the minimum size is blocked; without exchanges a balanced
    partition at the minimum size (e.g. 12 classes in 4 clusters of 3) could never change at all.
    """
    members = np.flatnonzero(labels == target)
    if not len(members):
        return None
    rest = np.flatnonzero(labels == labels[i])
    rest = rest[rest != i]  # i's cluster without i
    s = A + A.T  # a pair's contribution to the total within-cluster affinity (A's diagonal is zero)
    # i leaves its cluster for target without j; j leaves target for i's cluster without i.
    gains = (s[i, members].sum() - s[i, members]) - s[i, rest].sum() + s[np.ix_(members, rest)].sum(1) - s[np.ix_(members, members)].sum(1)
    k = int(np.argmax(gains))
    return int(members[k]) if gains[k] > 2 * tol else None


def _refine(
    A: np.ndarray, labels: np.ndarray, n_clusters: int, min_size: int, max_iter: int
) -> tuple[np.ndarray, str]:
    """Move classes to the cluster of highest average affinity until stable; where a move would break the
    minimum size, exchange the class with a member of that cluster if that raises the within-cluster affinity.

    ``A`` must have a zero diagonal. Returns the labels and why it stopped: ``"converged"``,
    ``"cycle"`` (a partition repeated) or ``"max_iter"``.
    """
    labels = labels.copy()
    num_classes = len(labels)
    sizes = np.bincount(labels, minlength=n_clusters)
    tol = _REL_TOL * max(1.0, float(np.abs(A).max()))
    # The average-distance update has no potential function, so it can cycle; remember partitions.
    seen = {_canonical(labels).tobytes()}
    for _ in range(max_iter):
        moved = False
        for i in range(num_classes):
            cur = labels[i]
            sums = np.bincount(labels, weights=A[i], minlength=n_clusters)
            counts = sizes.astype(np.float64)
            counts[cur] -= 1  # i itself is not part of the average (its A[i, i] is 0 anyway)
            means = np.divide(sums, counts, out=np.full(n_clusters, -np.inf), where=counts > 0)
            best = int(np.flatnonzero(means >= means.max() - tol)[0])
            # Only strict improvements move a class: ties stay put, which keeps ties from cycling.
            if not means[best] > means[cur] + tol:
                continue
            if sizes[cur] - 1 >= min_size:
                labels[i] = best
                sizes[cur] -= 1
                sizes[best] += 1
                moved = True
            elif (j := _best_swap(A, labels, i, best, tol)) is not None:
                labels[i], labels[j] = best, cur
                moved = True
        if not moved:
            return labels, "converged"
        key = _canonical(labels).tobytes()
        if key in seen:
            return labels, "cycle"
        seen.add(key)
    return labels, "max_iter"


def improved_kmeans(
    A: np.ndarray,
    n_clusters: int,
    min_size: int = 4,
    seed: int = 0,
    max_iter: int = 100,
    n_init: int = 10,
) -> np.ndarray:
    """The paper's improved k-means on a class affinity matrix (Sec. 3.1.3).

    There are no cluster centres: starting from a random balanced partition, each class in turn
    moves to the cluster with the largest average affinity to its members (itself excluded),
    provided no cluster drops below ``min(min_size, num_classes // n_clusters)`` members (the
    paper's "no less than 4 samples per cluster"); where the minimum blocks the move, the class is
    exchanged with the member of that cluster whose exchange raises the total within-cluster
    affinity most, if any does (without exchanges a partition at the minimum size, e.g. 12 classes
    in 4 clusters of 3, is frozen at its random start). A class only moves on a strict improvement.
    Passes stop when nothing moves, after ``max_iter`` passes, or when a partition repeats.
    Of ``n_init`` restarts (seeds spawned from ``seed``) the partition with the largest total
    within-cluster affinity wins (ties: the first).

    Args:
        A: (C, C) affinity, larger = more similar (e.g. :func:`affinity`); the diagonal is ignored.

    Returns:
        (C,) int64 cluster labels, numbered by first appearance (class 0 is in cluster 0).
    """
    A = _as_square(A, "A").copy()
    np.fill_diagonal(A, 0.0)
    num_classes = A.shape[0]
    if not 1 <= n_clusters <= num_classes:
        raise ValueError(f"n_clusters must be in [1, {num_classes}], got {n_clusters}")
    if min_size < 1:
        raise ValueError(f"min_size must be >= 1, got {min_size}")
    if max_iter < 1 or n_init < 1:
        raise ValueError(f"max_iter and n_init must be >= 1, got {max_iter} and {n_init}")
    effective_min = min(min_size, num_classes // n_clusters)

    best_labels: np.ndarray | None = None
    best_score = 0.0
    for child in np.random.SeedSequence(seed).spawn(n_init):
        rng = np.random.default_rng(child)
        # Balanced start: sizes differ by at most one, so every cluster already meets the minimum.
        start = rng.permutation(np.arange(num_classes) % n_clusters)
        labels, _ = _refine(A, start, n_clusters, effective_min, max_iter)
        score = _within_affinity(A, labels)
        if best_labels is None or score > best_score + _REL_TOL * max(1.0, abs(best_score)):
            best_labels, best_score = labels, score
    assert best_labels is not None  # n_init >= 1
    return _canonical(best_labels)


def cluster_select(B: np.ndarray, clusters: np.ndarray, k: int) -> Selection:
    """S-k: for each class, the k-th (1-based) most similar class by ``B[i, j]`` from each cluster.

    A cluster with fewer than ``k`` candidates gives its last (least similar) one. The class's own
    cluster may have no candidate (a singleton); its slot is filled with the most similar class
    not chosen yet (:func:`ranked_others` order), appended at the end. Otherwise the picks are in
    cluster-id order. Every class gets ``n_clusters`` distinct classes.
    """
    B = _as_square(B, "B")
    num_classes = B.shape[0]
    clusters = np.asarray(clusters)
    if clusters.shape != (num_classes,) or not np.issubdtype(clusters.dtype, np.integer):
        raise ValueError(
            f"clusters must be ({num_classes},) integer labels, got {clusters.shape} {clusters.dtype}"
        )
    if k < 1:
        raise ValueError(f"k must be >= 1 (1-based), got {k}")
    ids = np.unique(clusters)
    if len(ids) > num_classes - 1:
        raise ValueError(
            f"cannot select {len(ids)} distinct classes (one per cluster) "
            f"from {num_classes - 1} other classes"
        )
    selection = {}
    for i in range(num_classes):
        picks = []
        for c in ids:
            cand = np.flatnonzero((clusters == c) & (np.arange(num_classes) != i))
            if len(cand):
                picks.append(int(_order_desc(B[i], cand)[min(k, len(cand)) - 1]))
        fill = [j for j in ranked_others(B, i) if j not in picks]
        selection[i] = picks + fill[: len(ids) - len(picks)]
    return selection
