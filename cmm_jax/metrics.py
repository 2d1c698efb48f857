"""Metric math on landmark sequences: pure NumPy, no models.

Used by `evaluate` (landmark metrics), `video_metrics` and the FVD features.
Distances are divided by an inter-ocular distance (IOD, outer eye corners);
"displacements" are each frame minus the sequence's first (neutral) frame,
so two sequences that start from different faces compare by their motion.
"""

from __future__ import annotations

import itertools

import numpy as np

from cmm_jax import landmarks


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two (N, F) feature sets."""
    mean_a, mean_b = features_a.mean(0), features_b.mean(0)
    cov_a = np.cov(features_a, rowvar=False)
    cov_b = np.cov(features_b, rowvar=False)
    # tr(sqrtm(A B)) is the sum of the square roots of A B's eigenvalues, which
    # are real and >= 0 for covariances; this also holds when A B is singular
    # (features that are always 0), where sqrtm warns and loses accuracy.
    eigenvalues = np.linalg.eigvals(cov_a @ cov_b).real
    trace_sqrt = np.sqrt(np.clip(eigenvalues, 0.0, None)).sum()
    return float(((mean_a - mean_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_sqrt)


def pairwise_distance(sequences: np.ndarray, iod: np.ndarray) -> np.ndarray:
    """Mean pairwise distance within each set of sequences.

    sequences: (..., K, T, 68, 2); iod: (...,) -> (...,): point-to-point
    distance averaged over points, frames and the K(K-1)/2 pairs, over iod.
    """
    num = sequences.shape[-4]
    pairs = list(itertools.combinations(range(num), 2))
    distances = [
        landmarks.point_error(sequences[..., i, :, :, :], sequences[..., j, :, :, :]).mean((-2, -1))
        for i, j in pairs
    ]
    return np.mean(distances, axis=0) / iod


def major_styles(train_label, train_style, num_classes, num_styles, threshold: float = 0.10) -> list[np.ndarray]:
    """For each class, the styles whose share of its training sequences is >= threshold."""
    result = []
    for c in range(num_classes):
        counts = np.bincount(train_style[train_label == c], minlength=num_styles)
        prior = counts / max(counts.sum(), 1)
        result.append(np.flatnonzero(prior >= threshold))
    return result


def displacements(sequences: np.ndarray) -> np.ndarray:
    """(..., T, 68, 2) -> (..., T-1, 68, 2): frames 1.. minus frame 0, over frame 0's IOD."""
    iod = landmarks.inter_ocular_distance(sequences[..., 0, :, :])
    return (sequences[..., 1:, :, :] - sequences[..., :1, :, :]) / iod[..., None, None, None]


def motion_error(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean point distance between two sets of IOD-unit displacements.

    a, b: (..., T-1, 68, 2), broadcastable -> (...,)."""
    return np.linalg.norm(a - b, axis=-1).mean((-2, -1))


def best_of_k_error(modes: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """For each target, the error of the closest of the modes.

    modes: (K, T-1, 68, 2) displacements; targets: (J, T-1, 68, 2) -> (J,)."""
    errors = motion_error(modes[None], targets[:, None])  # (J, K)
    return errors.min(axis=1)


def face_spread(motion: np.ndarray) -> float:
    """How much a motion changes across faces, everything else fixed.

    motion: (F, ..., T-1, 68, 2), axis 0 = faces, IOD-unit displacements made
    with the same randomness (seed, mode, clip parameters) for every face.
    Returns the root-mean-square distance of each face's point from the
    faces' mean, averaged over the other axes, frames and points.
    """
    deviation = motion - motion.mean(axis=0, keepdims=True)
    return float(np.sqrt((deviation**2).sum(-1).mean(0)).mean())


def kmeans(points: np.ndarray, num_clusters: int, rng: np.random.Generator, iterations: int = 25):
    """Lloyd's k-means with k-means++ seeding. points: (N, D) -> (centres (k, D), assignment (N,))."""
    num_clusters = min(num_clusters, len(points))
    centres = [points[rng.integers(len(points))]]
    for _ in range(1, num_clusters):
        squared = np.min([((points - c) ** 2).sum(-1) for c in centres], axis=0)
        centres.append(points[rng.choice(len(points), p=squared / squared.sum())])
    centres = np.stack(centres)
    previous = None
    for _ in range(iterations):
        squared = ((points[:, None] - centres[None]) ** 2).sum(-1)
        assignment = squared.argmin(1)
        if previous is not None and np.array_equal(assignment, previous):
            break  # a fixed point: the centres below would come out the same again
        previous = assignment
        for k in range(num_clusters):
            if np.any(assignment == k):
                centres[k] = points[assignment == k].mean(0)
    return centres, ((points[:, None] - centres[None]) ** 2).sum(-1).argmin(1)
