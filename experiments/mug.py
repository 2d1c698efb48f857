"""CMM-Net on MUG: six basic emotions (anger, disgust, fear, happiness,
sadness, surprise) of 86 people.

Prepare the data once (resumable; see README "Real data"), then train:

    python -m cmm_jax.data.prepare --dataset=mug --manual_dir=~/data/MUG
    python -m cmm_jax.main --config=experiments/mug.py --workdir=runs/mug \
        --config.dataset.manual_dir=~/data/MUG

The class count (6, or 7 with --config.dataset.builder_kwargs.include_neutral=True)
comes from the dataset. A starting point, not tuned on the real data (BUILD.md).
"""

import ml_collections

from experiments import uva_nemo


def get_config() -> ml_collections.ConfigDict:
    config = uva_nemo.get_config()
    config.num_modes = 3  # fewer takes per person and emotion than UvA-NEMO has smiles
    config.dataset.name = "mug"
    # MUG is captured at 19 fps; 10 fps makes a clip 3.2 s (onset and apex).
    config.dataset.builder_kwargs = ml_collections.ConfigDict(
        {"num_frames": 32, "fps": 10.0, "image_size": 64, "detect_every": 0, "smooth_sigma": 0.0, "min_frames": 16, "max_side": 960,
         "include_neutral": False}
    )
    for stage, steps in (("vae", 4000), ("classifier", 2000), ("judge", 2000), ("recurrent", 4000), ("multimode", 6000)):
        config[stage].steps = steps
    config.translator.steps = 15000
    return config
