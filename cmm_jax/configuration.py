"""What a config may name (stages, datasets, timings), and checks on a config
before anything runs, each failing with one clear line."""

from __future__ import annotations

import os
import re
import sys
import tempfile

import jax
from absl import flags

from cmm_jax.errors import UserError

# The stages of CMM-Net in training order (`cmm_jax.stages` defines each).
STAGE_ORDER = ("vae", "classifier", "judge", "recurrent", "multimode", "translator")
# What the mode decoders are trained on (config.multimode.train_timing):
# "random": a random draw of the recurrent net, as at generation;
# "matched": the draw closest to the real sequence out of recurrent.num_samples;
# "posterior": the recurrent net unrolled from noise inferred from the real
# sequence (NoisePosterior), with a KL term towards the generation prior.
TRAIN_TIMINGS = ("random", "matched", "posterior")
# How each training sequence's error is shared among the K modes
# (config.multimode.assignment; `stages.multimode_losses`).
ASSIGNMENTS = ("balanced", "wta", "mean")
# Dataset name -> module holding its TFDS builder and a `build(data_dir, **kw)`,
# inside the package of builders (`cmm_jax.data.pipeline.builder_module` finds it).
BUILDER_MODULES = {
    "smile_synth": "smile_synth.smile_synth_dataset_builder",
    "uva_nemo": "uva_nemo.uva_nemo_dataset_builder",
    "mug": "mug.mug_dataset_builder",
}
# The package of builders: the repository's top-level datasets/ folder, which is
# `datasets` when run from a checkout (the README's commands) and
# `cmm_jax_datasets` once installed (pyproject.toml), since Hugging Face's
# package is called `datasets` and installing ours under that name would
# overwrite it. The first that holds our builders is used: a checkout's
# working tree before an installed copy.
BUILDER_PACKAGES = ("datasets", "cmm_jax_datasets")
# What the translator and its discriminator may compute in (config.translator.dtype):
# bfloat16 for accelerators with bf16 matrix units; parameters stay float32.
TRANSLATOR_DTYPES = ("float32", "bfloat16")
# Datasets made from videos the user downloads (TFDS manual_dir).
VIDEO_DATASETS = ("uva_nemo", "mug")
# Layer sizes that must be positive integers, by config section.
SIZES = {
    "vae": ("latent_dim", "hidden"),
    "classifier": ("hidden", "features"),
    "judge": ("hidden", "features"),
    "recurrent": ("hidden", "noise_dim"),
    "multimode": ("hidden",),
    "translator": ("features", "num_levels", "disc_features"),
}
# Options that change what a trained stage computes, with the value a config
# without them means (runs from before the option). A checkpoint trained with
# another value would compute something else (or not load): `run_dir.load_model`
# refuses it. (recurrent.face_noise acts in training only, so it is not here.)
MODEL_OPTIONS = {"recurrent": {"relative_input": False}, "multimode": {"motion_only": False}}


def model_option(config, stage: str, key: str):
    """The value of MODEL_OPTIONS[stage][key] in `config` (its default if absent)."""
    return config[stage].get(key, MODEL_OPTIONS[stage][key])


# Frames per second a video may have (eval.fps, sample --fps): a GIF's frames
# last whole hundredths of a second, so 100 is its limit.
MIN_FPS, MAX_FPS = 1, 100
# Stage seeds are seed * 100 + the stage's index (`train.stage_seed`); NumPy and
# grain take seeds below 2**32.
MAX_SEED = 2**32 // 100 - 1


def _config_file(argv) -> str | None:
    """The --config file named in `argv` (ml_collections allows `FILE:ARGS`)."""
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            return arg.split("=", 1)[1].split(":", 1)[0]
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1].split(":", 1)[0]
    return None


def _line_in(error: BaseException, path: str) -> int | None:
    """The line of `path` where `error` was raised (its innermost frame there)."""
    if isinstance(error, SyntaxError) and error.filename and os.path.realpath(error.filename) == path:
        return error.lineno
    line, frame = None, error.__traceback__
    while frame is not None:
        if os.path.realpath(frame.tb_frame.f_code.co_filename) == path:
            line = frame.tb_lineno
        frame = frame.tb_next
    return line


def parse_flags(argv):
    """absl's flag parsing (`app.run(main, flags_parser=parse_flags)`), where a
    config file that is missing or fails to load (an import, a syntax error,
    its own code raising) and a --config.<field> override of a field the
    config does not have are one `error:` line and exit code 2, as other
    config mistakes are (absl prints them as tracebacks through ml_collections'
    loader); so are a missing required flag and a flag's bad value (absl:
    "FATAL Flags parsing error", exit code 1)."""
    path = _config_file(argv)
    if path is not None and not os.path.isfile(path):
        print(f"error: no config file {path}", file=sys.stderr)
        sys.exit(2)
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:  # a missing or malformed flag (absl: "FATAL Flags parsing error", exit code 1)
        print(f"error: {' '.join(str(e).split()).rstrip('.')}; --help lists the flags", file=sys.stderr)
        sys.exit(2)
    except Exception as e:
        line = _line_in(e, os.path.realpath(path)) if path else None
        if line is not None:
            print(f"error: the config file {path} fails at line {line}: {type(e).__name__}: {e}", file=sys.stderr)
            sys.exit(2)
        if not isinstance(e, (AttributeError, KeyError)):
            raise
        message = str(e).replace("\\", "")
        field = re.search(r"'([^'\n]+)'", message)
        suggestion = re.search(r'Did you mean "([^"]+)"', message)
        overrides = ", ".join(a.split("=")[0] for a in argv[1:] if a.startswith("--config."))
        print(f"error: the config has no field {field.group(1) if field else message!r}"
              + (f" (did you mean {suggestion.group(1)!r}?)" if suggestion else "")
              + f"; overrides given: {overrides}", file=sys.stderr)
        sys.exit(2)


def check_eval(config) -> None:
    """The `eval` section's values (training checks them with the rest; the
    evaluate command, which runs on a trained config, checks only these)."""
    if config.eval.get("split", "test") not in ("train", "validation", "test"):
        raise UserError(f"eval.split must be train, validation or test, got {config.eval.split!r}")
    if not MIN_FPS <= config.eval.get("fps", 8) <= MAX_FPS:
        raise UserError(f"eval.fps must be in [{MIN_FPS}, {MAX_FPS}], got {config.eval.fps!r}")
    max_inputs = config.eval.get("max_inputs", 0)
    if not isinstance(max_inputs, int) or max_inputs < 0:
        raise UserError(f"eval.max_inputs must be an integer >= 0 (0: every input), got {max_inputs!r}")


def parse_stages(stages: str) -> tuple[str, ...]:
    names = tuple(s.strip() for s in stages.split(",") if s.strip())
    unknown = [s for s in names if s not in STAGE_ORDER]
    if unknown:
        raise UserError(f"unknown stage(s) {unknown}; stages are {','.join(STAGE_ORDER)}")
    return names


def validate(config, workdir: str) -> tuple[str, ...]:
    """Validates `config` for a run in `workdir`; returns the stages to train."""
    if config.dataset.name not in BUILDER_MODULES:
        raise UserError(
            f"unknown dataset {config.dataset.name!r}; choose one of {sorted(BUILDER_MODULES)}"
        )
    if not isinstance(config.num_modes, int) or config.num_modes < 1:
        raise UserError(f"num_modes must be an integer >= 1, got {config.num_modes!r}")
    if not isinstance(config.seed, int) or not 0 <= config.seed <= MAX_SEED:
        raise UserError(f"seed must be an integer in [0, {MAX_SEED}], got {config.seed!r}")
    for section, keys in SIZES.items():
        for key in keys:
            value = config[section][key]
            if not isinstance(value, int) or value < 1:
                raise UserError(f"{section}.{key} must be an integer >= 1, got {value!r}")
    stages = parse_stages(config.stages)
    devices, processes = jax.device_count(), jax.process_count()
    for name in STAGE_ORDER:
        stage = config[name]
        if stage.steps < 1:
            raise UserError(f"{name}.steps must be >= 1, got {stage.steps}")
        if stage.learning_rate <= 0:
            raise UserError(f"{name}.learning_rate must be > 0, got {stage.learning_rate}")
        if stage.batch_size < 1 or stage.batch_size % devices or stage.batch_size % processes:
            raise UserError(
                f"{name}.batch_size={stage.batch_size} must be a positive multiple of the "
                f"device count ({devices}) and process count ({processes})"
            )
    if "translator" in stages:
        size = config.translator.image_size
        if size < 32 or size & (size - 1):
            raise UserError(f"translator.image_size must be a power of two >= 32, got {size}")
        for path in (p.strip() for p in config.translator.photos.split(",")):
            if path and not os.path.isfile(path):
                raise UserError(f"translator.photos: {path}: no such file")
    if config.translator.get("dtype", "float32") not in TRANSLATOR_DTYPES:
        raise UserError(f"translator.dtype must be one of {', '.join(TRANSLATOR_DTYPES)}, "
                        f"got {config.translator.dtype!r}")
    if config.multimode.get("train_timing", "matched") not in TRAIN_TIMINGS:
        raise UserError(f"multimode.train_timing must be one of {', '.join(TRAIN_TIMINGS)}, "
                        f"got {config.multimode.train_timing!r}")
    if config.multimode.assignment not in ASSIGNMENTS:  # a typo would train the "mean" ablation
        raise UserError(f"multimode.assignment must be one of {', '.join(ASSIGNMENTS)}, "
                        f"got {config.multimode.assignment!r}")
    if not config.recurrent.get("face_noise", 0.0) >= 0:
        raise UserError(f"recurrent.face_noise must be >= 0, got {config.recurrent.face_noise!r}")
    if not config.multimode.get("temperature", 1.0) >= 0:
        raise UserError(f"multimode.temperature must be >= 0, got {config.multimode.temperature!r}")
    if not config.multimode.get("spread", 0.0) >= 0:
        raise UserError(f"multimode.spread must be >= 0, got {config.multimode.spread!r}")
    if config.multimode.get("residual_bank", 1) < 1:
        raise UserError(f"multimode.residual_bank must be >= 1, got {config.multimode.residual_bank!r}")
    check_eval(config)
    for key in ("log_every", "checkpoint_every"):
        if config[key] < 1:
            raise UserError(f"{key} must be >= 1, got {config[key]}")
    _check_writable(workdir)
    return stages


def _check_writable(workdir: str) -> None:
    try:
        os.makedirs(workdir, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=workdir):
            pass
    except OSError as e:
        raise UserError(f"workdir {workdir!r} is not writable: {e.strerror}") from e
