"""Trains every stage of CMM-Net, evaluates, and writes samples.

  python -m cmm_jax.main --config=experiments/smile.py --workdir=runs/smile
  python -m cmm_jax.main --config=experiments/smile.py --workdir=runs/k1 \
      --config.num_modes=1 --config.stages=multimode

Many processes (BUILD.md "Many hosts"): --distributed, or
--coordinator_address=HOST:PORT --num_processes=N --process_id=I.
"""

from __future__ import annotations

import json
import os

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from cmm_jax import compilation_cache, configuration, distributed, evaluate, run_dir, timing, train
from cmm_jax.errors import run_or_exit
from cmm_jax.metric_writer import announce

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for checkpoints, metrics and samples.")
distributed.define_flags()
compilation_cache.define_flags()


def train_and_evaluate(config, workdir: str) -> dict | None:
    """Trains the configured stages, then (config.evaluate) writes the metrics
    and samples; timings.json says where the time went."""
    timing.reset()
    builder, models = train.train(config, workdir)
    results = None
    if config.evaluate:
        missing = [name for name in evaluate.NEEDED_STAGES
                   if name not in models and not run_dir.has_model(name, config, workdir)]
        if missing:  # e.g. --config.stages=vae: a run trained stage by stage
            announce(f"eval: skipped until the {' and '.join(missing)} stage{'s are' if len(missing) > 1 else ' is'} "
                     f"trained (--config.stages={','.join(missing)})")
        else:
            results = evaluate.evaluate(config, workdir, builder=builder, models=models)
            announce(f"eval: {json.dumps(results)}")
    if jax.process_index() == 0:
        run_dir.write_timings(workdir, timing.phases())
    announce(timing.summary())
    return results


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    # Orbax logs every save at INFO; keep the terminal for the progress bars.
    logging.set_verbosity(logging.WARNING)

    def run():
        distributed.initialize_from_flags()  # before anything touches a JAX backend
        compilation_cache.enable_from_flags()
        return train_and_evaluate(_CONFIG.value, os.path.expanduser(_WORKDIR.value))  # "--workdir=~/x": no shell ~

    run_or_exit(run)


if __name__ == "__main__":
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main, flags_parser=configuration.parse_flags)
