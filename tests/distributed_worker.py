"""One process of tests/test_distributed.py: what `python -m cmm_jax.main
--config.evaluate=False` does (the same flags, `distributed.initialize_from_flags`,
`train.train`), then this process's trained parameters to
--params_out/params_<process index>.npz.

  python tests/distributed_worker.py --config=experiments/tiny.py --workdir=DIR \
      --coordinator_address=localhost:PORT --num_processes=2 --process_id=I --params_out=OUT
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags, logging  # noqa: E402
from flax import nnx  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from cmm_jax import distributed, train  # noqa: E402
from cmm_jax.errors import run_or_exit  # noqa: E402


def flat_params(models: dict) -> dict[str, np.ndarray]:
    """{"<stage>/<path>": array} of every model's nnx.Param leaves."""
    return {
        f"{stage}/{jax.tree_util.keystr(path, simple=True, separator='/')}": np.asarray(leaf)
        for stage, model in models.items()
        for path, leaf in jax.tree_util.tree_leaves_with_path(nnx.state(model, nnx.Param))
    }


def run() -> None:
    distributed.initialize_from_flags()
    _, models = train.train(flags.FLAGS.config, flags.FLAGS.workdir)
    np.savez(os.path.join(flags.FLAGS.params_out, f"params_{jax.process_index()}.npz"), **flat_params(models))


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    run_or_exit(run)


if __name__ == "__main__":
    # Flags are defined here, not at import: the test imports flat_params.
    config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
    flags.DEFINE_string("workdir", None, "Folder for checkpoints and metrics.")
    flags.DEFINE_string("params_out", None, "Folder for params_<process index>.npz.")
    distributed.define_flags()
    flags.mark_flags_as_required(["config", "workdir", "params_out"])
    app.run(main)
