"""Prepare a dataset from the command line (the same as `tfds build`, plus options).

    python -m cmm_jax.data.prepare --dataset=uva_nemo --manual_dir=~/data/UvA-NEMO
    python -m cmm_jax.data.prepare --dataset=mug --manual_dir=~/data/MUG --fps=19 --workers=8
    python -m cmm_jax.data.prepare --dataset=uva_nemo --manual_dir=... --write_split

Preprocessing is resumable: stop it (Ctrl-C) and run the same command again.
Every field of the dataset's builder config is a flag (--num_frames, --fps,
--image_size, --detect_every, --smooth_sigma, --min_frames, and for MUG
--include_neutral); the same values go in a training config as
`config.dataset.builder_kwargs`.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

from cmm_jax import configuration, files
from cmm_jax.data import pipeline, video_dataset
from cmm_jax.errors import UserError


def _parser(dataset: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cmm_jax.data.prepare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, choices=sorted(configuration.BUILDER_MODULES))
    parser.add_argument("--data_dir", default="data/tfds", help="where TFDS datasets live (default: data/tfds)")
    parser.add_argument("--manual_dir", default="", help="the folder with the downloaded original data")
    parser.add_argument("--workers", type=int, default=0, help="preprocessing processes (0: one per CPU core)")
    parser.add_argument(
        "--write_split", action="store_true",
        help="rewrite the dataset's test_subjects.txt from the videos in manual_dir (10%% of the videos, "
        "subject-disjoint, seeded) and stop",
    )
    if dataset in configuration.BUILDER_MODULES:
        builder = pipeline.builder_module(dataset).Builder
        config_class = getattr(builder, "CONFIG_CLASS", None)
        if config_class is not None:
            defaults = builder.BUILDER_CONFIGS[0]
            for name in video_dataset.parameters(config_class):
                kind = type(getattr(defaults, name))
                parser.add_argument(
                    f"--{name}", type=str if kind is bool else kind, default=None, help=f"default {getattr(defaults, name)}"
                )
    return parser


def write_split(module, manual_dir: str, path: str | None = None) -> str:
    """Rewrites the dataset's list of test subjects (or writes it to `path`) from the user's folder."""
    builder_class = module.Builder
    path = path or builder_class.SPLIT_FILE
    with tempfile.TemporaryDirectory() as unused, video_dataset.quiet_tfds():
        builder = builder_class(data_dir=unused)  # only to list the videos
        videos = builder.find_videos(manual_dir)
    if not videos:
        raise UserError(f"no {builder.name} videos found under {manual_dir}")
    count = round(builder_class.TEST_FRACTION * len(videos))
    subjects = video_dataset.balanced_test_subjects(videos, count)
    chosen = sum(v.subject in subjects for v in videos)
    with open(builder_class.SPLIT_FILE) as f:
        title = f.readline()  # the first line names the dataset
    header = [
        title,
        "# Written by `python -m cmm_jax.data.prepare --write_split` from a folder of\n",
        f"# {len(videos)} videos: the first set of subjects, in a seeded order (seed 0),\n",
        f"# with {count} videos ({builder_class.TEST_FRACTION:.0%}; or the closest below): {len(subjects)} subjects, {chosen} videos.\n",
    ]
    files.write_bytes_atomically(path, "".join(header + [s + "\n" for s in subjects]).encode())
    return f"{path}: {len(subjects)} test subjects, {chosen} of {len(videos)} videos"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--dataset", default="")
    try:
        args = _parser(first.parse_known_args(argv)[0].dataset).parse_args(argv)
        module = pipeline.builder_module(args.dataset)
        if args.write_split:
            if args.dataset not in configuration.VIDEO_DATASETS:
                raise UserError(f"--write_split is for {' and '.join(configuration.VIDEO_DATASETS)}")
            if not args.manual_dir:
                raise UserError("--write_split needs --manual_dir")
            print(write_split(module, os.path.expanduser(args.manual_dir)))
            return 0
        reserved = {"dataset", "data_dir", "manual_dir", "workers", "write_split"}
        overrides = {k: v for k, v in vars(args).items() if k not in reserved and v is not None}
        video = args.dataset in configuration.VIDEO_DATASETS
        if not video and (args.manual_dir or args.workers):
            raise UserError(f"--manual_dir and --workers are for {' and '.join(configuration.VIDEO_DATASETS)}; "
                            f"{args.dataset} is generated, not read from a folder")
        kwargs = {"manual_dir": args.manual_dir or None, "workers": args.workers} if video else {}
        builder = module.build(os.path.expanduser(args.data_dir), **kwargs, **overrides)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # disk full, permissions: finished videos are kept
        print(f"error: {e.strerror or e}{f': {e.filename}' if e.filename else ''}; "
              "finished videos are kept, run the same command again", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; finished videos are kept, run the same command again to go on", file=sys.stderr)
        return 130
    splits = ", ".join(f"{name} {info.num_examples}" for name, info in builder.info.splits.items())
    print(f"{builder.name}/{builder.builder_config.name} ready in {builder.data_dir}: {splits}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
