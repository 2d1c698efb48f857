"""The metric helpers against direct computations."""

import os
import time

import numpy as np
import pytest
import scipy.linalg

from cmm_jax import evaluate
from cmm_jax.metrics import frechet_distance, kmeans, major_styles, pairwise_distance


def test_frechet_distance_matches_scipy_sqrtm():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 8))
    b = rng.normal(size=(400, 8)) @ rng.normal(size=(8, 8)) + 1.0
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    expected = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(
        cov_a + cov_b - 2.0 * np.real(scipy.linalg.sqrtm(cov_a @ cov_b))
    )
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_pairwise_distance():
    sequences = np.zeros((2, 3, 4, 68, 2))  # 2 sets of K=3 sequences
    sequences[:, 1, ..., 0] = 3.0  # mode 1 shifted by 3 in x
    sequences[:, 2, ..., 1] = 4.0  # mode 2 shifted by 4 in y
    # pairs: (0,1) 3, (0,2) 4, (1,2) 5 -> mean 4; divided by iod 2.
    np.testing.assert_allclose(pairwise_distance(sequences, np.array([2.0, 2.0])), [2.0, 2.0])


def test_major_styles_follow_training_priors():
    label = np.array([0] * 10 + [1] * 10)
    style = np.array([0] * 5 + [1] * 4 + [2] + [3] * 10)
    majors = major_styles(label, style, num_classes=2, num_styles=4)
    assert majors[0].tolist() == [0, 1, 2] and majors[1].tolist() == [3]


def test_kmeans_ends_at_a_fixed_point():
    """Lloyd's iterations stop once the assignment repeats: every centre is then
    the mean of its points and every point is nearest its own centre."""
    rng = np.random.default_rng(0)
    points = np.concatenate([rng.normal(c, 0.3, size=(50, 6)) for c in (-2.0, 0.0, 2.0)])
    centres, assignment = kmeans(points, 3, np.random.default_rng(1))
    for k in range(3):
        np.testing.assert_allclose(centres[k], points[assignment == k].mean(0))
    squared = ((points[:, None] - centres[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(assignment, squared.argmin(1))
    assert sorted(np.bincount(assignment).tolist()) == [50, 50, 50]


def _exit_unless_in(pid: int, value):
    if os.getpid() != pid:
        os._exit(1)  # the helper process dies
    return value


def test_work_beside_the_evaluation_gives_its_result_from_another_process_or_from_here():
    # The oracle rows are drawn in a second process while the model is scored.
    assert evaluate._Beside(os.getpid).result() != os.getpid()
    # If that process dies, the same function runs here instead.
    assert evaluate._Beside(_exit_unless_in, os.getpid(), 7).result() == 7
    # An error there is raised here.
    with pytest.raises(ValueError):
        evaluate._Beside(int, "not a number").result()
    # A helper whose result is never asked for (an error came first) ends with
    # close(), and as a daemon it never holds up the program's exit.
    helper = evaluate._Beside(time.sleep, 600)
    process = helper._process
    assert process.daemon
    helper.close()
    assert process.exitcode is not None
