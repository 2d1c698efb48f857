"""Generators that a metric must tell apart from the model.

Each takes the test inputs (neutral faces, (N, 68, 2) in the models' [-1, 1]
coordinates) and returns K sequences per input and class, (N, C, K, T, 68, 2),
frame 0 = the input, like the model. Motions taken from data are moved onto
the input as displacements in inter-ocular units (`metrics.displacements`),
so only the face-relative motion carries over.

- `face_blind`: K training clips of the class, one per cluster of their motions
  (k-means; the clip nearest each centre), the same K for every face.
- `nearest_neighbour`: the K training clips of the class whose neutral face is
  nearest the input's.
- `oracle` (smile_synth only): K fresh clips of the test person from the data
  generator itself, with their true identity (face, per-person style
  repertoire): what a generator that knew the data's law would draw.
"""

from __future__ import annotations

import numpy as np

from cmm_jax import landmarks, metrics


def _onto(neutral: np.ndarray, motion: np.ndarray) -> np.ndarray:
    """neutral: (N, 68, 2); motion: (N, ..., T-1, 68, 2) IOD units -> (N, ..., T, 68, 2)."""
    iod = landmarks.inter_ocular_distance(neutral)
    extra = motion.ndim - 4
    anchor = neutral.reshape(neutral.shape[:1] + (1,) * (extra + 1) + neutral.shape[1:])
    moved = anchor + motion * iod.reshape((-1,) + (1,) * (motion.ndim - 1))
    start = np.broadcast_to(anchor, moved.shape[:-3] + (1,) + moved.shape[-2:])
    return np.concatenate([start, moved], axis=-3)


def face_blind(train: dict, neutral: np.ndarray, num_classes: int, num_modes: int, seed: int = 0) -> np.ndarray:
    """The same K class motions (one per k-means cluster of training motions) for every face."""
    motion = metrics.displacements(train["reference"])  # (M, T-1, 68, 2)
    chosen = []
    rng = np.random.default_rng(seed)
    for c in range(num_classes):
        members = np.flatnonzero(train["label"] == c)
        flat = motion[members].reshape(len(members), -1)
        centres, assignment = metrics.kmeans(flat, num_modes, rng)
        picks = [members[np.argmin(((flat - centre) ** 2).sum(-1))] for centre in centres]
        picks += picks[: num_modes - len(picks)]  # fewer clips than modes: repeat
        chosen.append(motion[picks])
    class_motions = np.stack(chosen)  # (C, K, T-1, 68, 2)
    return _onto(neutral, np.broadcast_to(class_motions, (len(neutral),) + class_motions.shape))


def _shape_key(faces: np.ndarray) -> np.ndarray:
    """(N, 68, 2) -> (N, 136): the face centred on its eyes and scaled to unit IOD."""
    eyes = 0.5 * (faces[:, landmarks.RIGHT_EYE_OUTER] + faces[:, landmarks.LEFT_EYE_OUTER])
    unit = (faces - eyes[:, None]) / landmarks.inter_ocular_distance(faces)[:, None, None]
    return unit.reshape(len(faces), -1)


def nearest_neighbour(train: dict, neutral: np.ndarray, num_classes: int, num_modes: int) -> np.ndarray:
    """For each input and class, the motions of the K training clips with the nearest neutral face."""
    motion = metrics.displacements(train["reference"])
    keys = _shape_key(train["landmarks"][:, 0])
    queries = _shape_key(neutral)
    distance = ((queries[:, None] - keys[None]) ** 2).sum(-1)  # (N, M)
    picked = []
    for c in range(num_classes):
        members = np.flatnonzero(train["label"] == c)
        order = members[np.argsort(distance[:, members], axis=1)[:, :num_modes]]  # (N, <=K)
        order = np.concatenate([order] * -(-num_modes // order.shape[1]), axis=1)[:, :num_modes]
        picked.append(motion[order])  # (N, K, T-1, 68, 2)
    return _onto(neutral, np.stack(picked, axis=1))


def oracle(neutral: np.ndarray, subjects: np.ndarray, num_classes: int, num_modes: int,
           draw_clean_clips, seed: int = 0) -> np.ndarray:
    """K clips of each test person drawn from the data generator.

    draw_clean_clips(subject, label, rng, num) -> (num, T, 68, 2) noise-free
    clips in [-1, 1]: the dataset's own law for that person.
    """
    out = []
    for i, subject in enumerate(subjects):
        per_class = []
        for c in range(num_classes):
            clips = draw_clean_clips(subject, c, np.random.default_rng([seed, i, c]), num_modes)
            per_class.append(metrics.displacements(clips))
        out.append(np.stack(per_class))
    return _onto(neutral, np.stack(out))
