"""The faces issue's acceptance checks on a real default run (not run in CI).

    CMM_JAX_RUN=runs/smile .venv/bin/python -m pytest -q -m trained_run tests

After README command 1: the shipped photo (scikit-image's astronaut, saved as
JPEG) through `python -m cmm_jax.sample` with both renderers and both classes,
measured with dlib (`cmm_jax.video_metrics`), not with our own landmarks.
"""

import os

import imageio.v3 as iio
import pytest
from skimage import data

from cmm_jax import sample

RUN = os.environ.get("CMM_JAX_RUN", "")
pytestmark = [
    pytest.mark.trained_run,
    pytest.mark.skipif(not RUN, reason="set CMM_JAX_RUN to a finished default run"),
]


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    # Written as README's first sampling command writes it (the default JPEG
    # quality): in that file dlib also finds the patch on her suit.
    path = tmp_path_factory.mktemp("photo") / "astronaut.jpg"
    iio.imwrite(path, data.astronaut())
    return str(path)


@pytest.mark.parametrize("renderer", ["warp", "translator"])
@pytest.mark.parametrize("label", ["posed", "spontaneous"])
def test_five_smiles_of_the_astronaut(photo, tmp_path, renderer, label):
    generator = sample.Generator.from_workdir(RUN, renderer)
    summary = sample.sample_photo(
        generator, photo, str(tmp_path / "out"), label=label, num_modes=5, seed=0, size=64, fps=8.0,
        metrics=True,
    )
    metrics = summary["metrics"]
    assert metrics["detection_rate"] >= 0.95
    assert metrics["landmark_nme"] <= 0.08
    assert metrics["identity_same_rate"] >= 0.95
    assert metrics["smile_strength_min_redetected"] > 1.05
    assert metrics["apd_claimed"] > 0
    assert sorted(os.listdir(tmp_path / "out")) == sorted(
        ["samples.npz", "grid.png", "input.png", "metrics.json"]
        + [f"mode_{k}{s}" for k in range(5) for s in (".mp4", ".gif")]
    )
