"""inference.ResidualBank: the K prototypes plus what real smiles of each mode add."""

import numpy as np

from cmm_jax import landmarks, metrics
from cmm_jax.inference import ResidualBank

T, POINTS = 5, 68


def _faces(n, rng):
    """n random neutral faces with different sizes (inter-ocular distances)."""
    base = rng.uniform(-0.5, 0.5, (1, POINTS, 2))
    return (base * rng.uniform(0.6, 1.2, (n, 1, 1)) + rng.normal(0, 0.01, (n, POINTS, 2))).astype(np.float32)


def _onto(faces, motion):
    """faces (N, 68, 2), motion (N, ..., T-1, 68, 2) in IOD units -> sequences (N, ..., T, 68, 2)."""
    iod = landmarks.inter_ocular_distance(faces)
    shape = (len(faces),) + (1,) * (motion.ndim - 3) + (POINTS, 2)
    start = np.broadcast_to(faces.reshape(shape), motion.shape[:-3] + (1, POINTS, 2))
    return np.concatenate([start, faces.reshape(shape) + motion * iod.reshape((-1,) + (1,) * (motion.ndim - 1))], -3)


def test_a_cell_draws_its_own_clips_onto_any_face():
    rng = np.random.default_rng(0)
    num_classes, num_modes = 2, 3
    faces = _faces(6, rng)
    # Prototype motions per class and mode, the same for every face, far apart.
    centre = rng.normal(0, 0.05, (num_classes, num_modes, T - 1, POINTS, 2)) * 10
    prototypes = _onto(faces, np.broadcast_to(centre, (6,) + centre.shape).copy())
    label = np.array([0, 0, 0, 1, 1, 1])
    mode = np.array([0, 1, 2, 0, 1, 2])
    wiggle = rng.normal(0, 0.01, (6, T - 1, POINTS, 2))
    clips = _onto(faces, centre[label, mode] + wiggle)
    bank = ResidualBank.fit(prototypes, clips, label, size=4, rng=np.random.default_rng(0))
    assert bank.counts.tolist() == [[1, 1, 1], [1, 1, 1]]  # each clip found its mode

    new_faces = _faces(2, np.random.default_rng(1))
    generated = _onto(new_faces, np.broadcast_to(centre, (2,) + centre.shape).copy())
    np.testing.assert_array_equal(bank.draw(generated, 0.0, np.random.default_rng(0)), generated)
    drawn = bank.draw(generated, 1.0, np.random.default_rng(0))
    np.testing.assert_array_equal(drawn[:, :, :, 0], generated[:, :, :, 0])  # frame 0 is the input
    added = metrics.displacements(drawn) - metrics.displacements(generated)  # (2, C, K, T-1, 68, 2)
    for c in range(num_classes):
        for k in range(num_modes):
            clip = np.flatnonzero((label == c) & (mode == k))[0]
            for face in range(2):  # the clip's own residual, in IOD units on every face
                np.testing.assert_allclose(added[face, c, k], wiggle[clip], atol=2e-3)
    half = metrics.displacements(bank.draw(generated, 0.5, np.random.default_rng(0))) - metrics.displacements(generated)
    np.testing.assert_allclose(half, 0.5 * added, atol=1e-5)


def test_draws_follow_the_seed_and_empty_cells_keep_the_prototype():
    rng = np.random.default_rng(0)
    residuals = rng.normal(0, 0.01, (1, 2, 8, T - 1, POINTS, 2)).astype(np.float16)
    bank = ResidualBank(residuals, np.array([[8, 0]], np.int32))
    generated = _onto(_faces(4, rng), np.zeros((4, 1, 2, T - 1, POINTS, 2)))
    a, b, c = (bank.draw(generated, 1.0, np.random.default_rng(s)) for s in (0, 0, 1))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a[:, :, 0], c[:, :, 0])
    np.testing.assert_array_equal(a[:, :, 1], generated[:, :, 1])
