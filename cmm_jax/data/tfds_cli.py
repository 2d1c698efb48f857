"""TFDS's own `tfds build` command, without TensorFlow.

The `tfds` console script of tensorflow-datasets 4.9.10 imports TensorFlow at
start-up (for its `convert_format` command) even though building an
array_record dataset needs none. This runs the same `build` command, with
the same flags, and nothing else:

    python -m cmm_jax.data.tfds_cli build datasets/uva_nemo --manual_dir=~/data/UvA-NEMO --data_dir=data/tfds

With TensorFlow installed, `tfds build datasets/uva_nemo --manual_dir=...`
does the same (our builders default to array_record).
"""

from __future__ import annotations

import dataclasses

import simple_parsing
from absl import app
from tensorflow_datasets.scripts.cli import build, cli_utils


@dataclasses.dataclass(frozen=True, kw_only=True)
class Args(cli_utils.Args):
    """TensorFlow Datasets' build command."""

    command: build.Args = simple_parsing.subparsers({"build": build.Args})

    def execute(self) -> None:
        self.command.execute()


def main(args: Args) -> None:
    args.execute()


if __name__ == "__main__":
    app.run(main, flags_parser=cli_utils.make_flags_parser(Args, description=__doc__.split("\n\n")[0]))
