"""Training steps/s and examples/s of every stage, and generation latency.

  python -m benchmarks.train_throughput [--config=experiments/smile.py] [--steps=50]

Random batches of the configured shapes (no dataset needed; the translator
gets random frames, as from a video dataset: batch = clips, each giving
translator.frames_per_clip image pairs); each stage's step
is compiled first and then timed. Prints a table; numbers depend on the
machine, so they live here and in benchmarks/RESULTS.md, never in tests.
"""

from __future__ import annotations

import time

import jax
import numpy as np
from absl import app, flags
from flax import nnx
from ml_collections import config_flags

from cmm_jax import sharding, train
from cmm_jax.configuration import STAGE_ORDER
from cmm_jax.data.pipeline import DatasetInfo
from cmm_jax.inference import generate
from cmm_jax.stages import STAGES

_CONFIG = config_flags.DEFINE_config_file("config", "experiments/smile.py", "Experiment config.")
_STEPS = flags.DEFINE_integer("steps", 50, "Timed steps per stage.")
_FRAMES = flags.DEFINE_integer("num_frames", 32, "Frames per sequence.")


def _batch(batch_size, num_frames, rng, frame_size=0):
    batch = {
        "landmarks": rng.uniform(-0.6, 0.6, (batch_size, num_frames, 68, 2)).astype(np.float32),
        "label": rng.integers(0, 2, batch_size).astype(np.int32),
        "style": rng.integers(0, 5, batch_size).astype(np.int32),
    }
    if frame_size:  # a video dataset's clips (the translator's input)
        batch["frames"] = rng.integers(0, 256, (batch_size, num_frames, frame_size, frame_size, 3), np.uint8)
    return batch


def main(argv):
    del argv
    config = _CONFIG.value
    info = DatasetInfo(("posed", "spontaneous"), tuple(f"s{i}" for i in range(5)), _FRAMES.value)
    mesh = sharding.make_mesh()
    rng = np.random.default_rng(0)
    print(f"devices: {jax.device_count()} x {jax.devices()[0].device_kind}, K = {config.num_modes}")
    print(f"{'stage':>10} {'batch':>6} {'steps/s':>9} {'examples/s':>11}")
    models = {}
    for name in STAGE_ORDER:
        graphdef, state, tx = train.init_state(name, config, info)
        frozen = {k: models[k] for k in STAGES[name].requires}
        step = train.make_train_step(name, config, graphdef, frozen, tx, mesh)
        frozen_states = sharding.replicate({k: nnx.state(m) for k, m in frozen.items()}, mesh)
        state = sharding.replicate(state, mesh)
        frame_size = config.translator.image_size if name == "translator" else 0
        batch = sharding.shard_batch(_batch(config[name].batch_size, _FRAMES.value, rng, frame_size), mesh)
        state, metrics = step(state, frozen_states, batch)  # compile
        jax.block_until_ready(metrics)
        start = time.perf_counter()
        for _ in range(_STEPS.value):
            state, metrics = step(state, frozen_states, batch)
        jax.block_until_ready(metrics)
        rate = _STEPS.value / (time.perf_counter() - start)
        print(f"{name:>10} {config[name].batch_size:>6} {rate:>9.1f} {rate * config[name].batch_size:>11.0f}")
        models[name] = nnx.merge(graphdef, state.params)

    generator = models["multimode"].generator
    fn = nnx.jit(
        lambda v, r, g, x, y, key: generate(
            v, r, g, x, y, key, _FRAMES.value, config.multimode.per_mode_timing
        )
    )
    neutral = _batch(1, 1, rng)["landmarks"][:, 0]
    label = np.zeros(1, np.int32)
    jax.block_until_ready(fn(models["vae"], models["recurrent"], generator, neutral, label, jax.random.PRNGKey(0)))
    timings = []
    for i in range(20):
        start = time.perf_counter()
        jax.block_until_ready(fn(models["vae"], models["recurrent"], generator, neutral, label, jax.random.PRNGKey(i)))
        timings.append(time.perf_counter() - start)
    print(f"one face -> {config.num_modes} landmark sequences of {_FRAMES.value} frames: "
          f"median {1000 * np.median(timings):.1f} ms after warm-up")


if __name__ == "__main__":
    app.run(main)
