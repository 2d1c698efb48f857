"""CMM-Net on UvA-NEMO: posed vs spontaneous smiles of 400 people.

Prepare the data once (resumable; see README "Real data"), then train:

    python -m cmm_jax.data.prepare --dataset=uva_nemo --manual_dir=~/data/UvA-NEMO
    python -m cmm_jax.main --config=experiments/uva_nemo.py --workdir=runs/uva_nemo \
        --config.dataset.manual_dir=~/data/UvA-NEMO

The class count (2) comes from the dataset. Steps and batch sizes are sized
for one accelerator (or a pod slice: batches are global and split over every
device); they are a starting point, not tuned on the real data (BUILD.md).
"""

import ml_collections

from experiments import smile


def get_config() -> ml_collections.ConfigDict:
    config = smile.get_config()
    config.num_modes = 5  # K
    config.log_every = 100
    config.checkpoint_every = 1000

    config.dataset = ml_collections.ConfigDict()
    config.dataset.name = "uva_nemo"
    config.dataset.data_dir = "data/tfds"
    # The folder with the original videos; needed until the dataset is prepared.
    config.dataset.manual_dir = ""
    config.dataset.workers = 0  # preprocessing processes (0: one per CPU core)
    # Preprocessing (datasets/uva_nemo): the protocol reported for CMM-Net is
    # 32-frame clips of 64x64 aligned faces from the neutral first frame;
    # 10 fps makes a clip 3.2 s of the 50 fps video (onset and apex).
    config.dataset.builder_kwargs = ml_collections.ConfigDict(
        {"num_frames": 32, "fps": 10.0, "image_size": 64, "detect_every": 0, "smooth_sigma": 0.0,
         "min_frames": 16, "max_side": 960}
    )

    # ~1100 training clips: more steps and larger batches than smile_synth.
    for stage, steps in (("vae", 5000), ("classifier", 3000), ("judge", 3000), ("recurrent", 5000), ("multimode", 8000)):
        config[stage].steps = steps
        config[stage].batch_size = 64
    # Real frames: the translator learns teeth, wrinkles and closing eyes.
    config.translator.image_size = 64
    config.translator.batch_size = 32
    config.translator.frames_per_clip = 4
    config.translator.steps = 20000
    config.translator.photos = ""  # unused: the records carry frames
    config.eval.fps = 10
    config.eval.render_metrics = True  # a minute of dlib beside hours of training
    return config
