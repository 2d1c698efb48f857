"""Generators that a metric must tell apart from the model.

Each takes the test inputs (neutral faces, (N, 68, 2) in the models' [-1, 1]
coordinates) and returns K sequences per input and class, (N, C, K, T, 68, 2),
frame 0 = the input, like the model. Motions taken from data are moved onto
the input as displacements in inter-ocular units (`metrics.displacements`),
so only the face-relative motion carries over.

- `face_blind`: K training clips of the class, one per cluster of their motions
  (k-means; the clip nearest each centre), the same K for every face;
  `face_blind_draws`: K of them at random (the same for every face).
- `nearest_neighbour`: the K training clips of the class whose neutral face is
  nearest the input's.
- `oracle` (smile_synth only): the same quantiser as `face_blind` on clips
  drawn from the data generator for the test person (`draw_clean_clips`):
  with their whole identity (what knowing the person is worth), or with only
  what their neutral face shows (what one photo can be worth at best).
- `oracle_draws` (smile_synth only): K clips drawn at random from the test
  person's law (all of it, or what the face shows): what a generator that
  samples perfectly scores.
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


def medoids(motion: np.ndarray, num_modes: int, rng: np.random.Generator) -> np.ndarray:
    """K representatives of a set of motions: the member nearest each k-means
    centre (a best-of-K quantiser). motion: (M, T-1, 68, 2) -> (K, T-1, 68, 2)."""
    if not len(motion):  # a class without clips: the neutral face, held
        return np.zeros((num_modes,) + motion.shape[1:], motion.dtype)
    flat = motion.reshape(len(motion), -1)
    centres, _ = metrics.kmeans(flat, num_modes, rng)
    picks = [int(np.argmin(((flat - centre) ** 2).sum(-1))) for centre in centres]
    picks = (picks * -(-num_modes // len(picks)))[:num_modes]  # fewer motions than modes: repeated in turn
    return motion[picks]


def face_blind(train: dict, neutral: np.ndarray, num_classes: int, num_modes: int, seed: int = 0) -> np.ndarray:
    """The same K class motions (one per k-means cluster of training motions) for every face."""
    motion = metrics.displacements(train["reference"])  # (M, T-1, 68, 2)
    rng = np.random.default_rng(seed)
    class_motions = np.stack([medoids(motion[train["label"] == c], num_modes, rng)
                              for c in range(num_classes)])  # (C, K, T-1, 68, 2)
    return _onto(neutral, np.broadcast_to(class_motions, (len(neutral),) + class_motions.shape))


def face_blind_draws(train: dict, neutral: np.ndarray, num_classes: int, num_modes: int, seed: int = 0) -> np.ndarray:
    """K training clips of the class drawn at random, the same K for every face:
    `face_blind` for a generator that samples (compare with `oracle_draws`)."""
    motion = metrics.displacements(train["reference"])
    rng = np.random.default_rng([seed, 2])
    class_motions = np.stack([_draw(motion[train["label"] == c], num_modes, rng) for c in range(num_classes)])
    return _onto(neutral, np.broadcast_to(class_motions, (len(neutral),) + class_motions.shape))


def _draw(motion: np.ndarray, num_modes: int, rng: np.random.Generator) -> np.ndarray:
    """K of the motions (M, T-1, 68, 2) at random, without replacement where
    there are enough; a class without clips: the neutral face, held."""
    if not len(motion):
        return np.zeros((num_modes,) + motion.shape[1:], motion.dtype)
    return motion[rng.choice(len(motion), num_modes, replace=len(motion) < num_modes)]


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
        if not len(members):  # a class without clips: the neutral face, held
            picked.append(np.zeros((len(neutral), num_modes) + motion.shape[1:], motion.dtype))
            continue
        order = members[np.argsort(distance[:, members], axis=1)[:, :num_modes]]  # (N, <=K)
        order = np.concatenate([order] * -(-num_modes // order.shape[1]), axis=1)[:, :num_modes]
        picked.append(motion[order])  # (N, K, T-1, 68, 2)
    return _onto(neutral, np.stack(picked, axis=1))


def oracle(neutral: np.ndarray, subjects: np.ndarray, num_classes: int, num_modes: int,
           draw_clean_clips, seed: int = 0, num_draws: int = 200) -> np.ndarray:
    """The K representatives of each test person's own law.

    draw_clean_clips(subject, label, rng, num) -> (num, T, 68, 2) noise-free
    clips in [-1, 1], drawn from the data generator for that person. Of
    num_draws of them, the k-means medoids (`medoids`, as `face_blind` picks
    from the whole class): the same quantiser, told who the person is.
    """
    motion = {}
    for subject in np.unique(subjects):
        motion[subject] = np.stack([
            medoids(metrics.displacements(draw_clean_clips(subject, c, np.random.default_rng([seed, c, _number(subject)]),
                                                           num_draws)),
                    num_modes, np.random.default_rng(seed))
            for c in range(num_classes)
        ])
    return _onto(neutral, np.stack([motion[s] for s in subjects]))


def oracle_draws(neutral: np.ndarray, subjects: np.ndarray, num_classes: int, num_modes: int,
                 draw_clean_clips, seed: int = 0) -> np.ndarray:
    """K clips drawn at random from each test person's own law: the data's
    spread with perfect knowledge (`oracle` takes K central ones instead)."""
    motion = {
        subject: np.stack([metrics.displacements(draw_clean_clips(
            subject, c, np.random.default_rng([seed, c, _number(subject), 1]), num_modes))
            for c in range(num_classes)])
        for subject in np.unique(subjects)
    }
    return _onto(neutral, np.stack([motion[s] for s in subjects]))


def _number(subject) -> int:
    """A stable integer for a subject name (for seeding)."""
    return int.from_bytes(str(subject).encode()[-8:].rjust(8, b"\0"), "little")
