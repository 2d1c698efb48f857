"""Metrics of the landmark generator on the test split (held-out subjects).

`python -m cmm_jax.evaluate --config=experiments/smile.py --workdir=DIR`
writes DIR/eval.json. Definitions (DESIGN §7): distances are divided by the
inter-ocular distance (outer eye corners) of the input's neutral face; a test
input is the neutral first frame of a test sequence.
"""

from __future__ import annotations

import functools
import itertools
import json
import os

import jax
import numpy as np
from flax import nnx
from absl import app, flags
from ml_collections import config_flags

from cmm_jax import landmarks
from cmm_jax.data import pipeline
from cmm_jax.errors import UserError, run_or_exit
from cmm_jax.metric_writer import announce
from cmm_jax.stages import generate

# A style counts as one of a class's styles when its share of that class's
# training sequences is at least this.
STYLE_PRIOR_THRESHOLD = 0.10
# Points a smile should not move: the jaw line without the chin region, the nose.
RIGID_POINTS = landmarks.JAW[:5] + landmarks.JAW[12:] + landmarks.NOSE_BRIDGE + landmarks.NOSE_BOTTOM


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two (N, F) feature sets."""
    mean_a, mean_b = features_a.mean(0), features_b.mean(0)
    cov_a = np.cov(features_a, rowvar=False)
    cov_b = np.cov(features_b, rowvar=False)
    # tr(sqrtm(A B)) is the sum of the square roots of A B's eigenvalues, which
    # are real and >= 0 for covariances; this also holds when A B is singular
    # (features that are always 0), where sqrtm warns and loses accuracy.
    eigenvalues = np.linalg.eigvals(cov_a @ cov_b).real
    trace_sqrt = np.sqrt(np.clip(eigenvalues, 0.0, None)).sum()
    return float(((mean_a - mean_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_sqrt)


def pairwise_distance(sequences: np.ndarray, iod: np.ndarray) -> np.ndarray:
    """Mean pairwise distance within each set of sequences.

    sequences: (..., K, T, 68, 2); iod: (...,) -> (...,): point-to-point
    distance averaged over points, frames and the K(K-1)/2 pairs, over iod.
    """
    num = sequences.shape[-4]
    pairs = list(itertools.combinations(range(num), 2))
    distances = [
        landmarks.point_error(sequences[..., i, :, :, :], sequences[..., j, :, :, :]).mean((-2, -1))
        for i, j in pairs
    ]
    return np.mean(distances, axis=0) / iod


def major_styles(train_label, train_style, num_classes, num_styles) -> list[np.ndarray]:
    """For each class, the styles with a training prior >= the threshold."""
    result = []
    for c in range(num_classes):
        counts = np.bincount(train_style[train_label == c], minlength=num_styles)
        prior = counts / max(counts.sum(), 1)
        result.append(np.flatnonzero(prior >= STYLE_PRIOR_THRESHOLD))
    return result


def _classify(classifier, sequences, batch_size=512):
    fn = nnx.jit(lambda model, s: model(s))
    outputs = [jax.device_get(fn(classifier, chunk)) for chunk in _chunks(sequences, batch_size)]
    return {k: np.concatenate([o[k] for o in outputs]) for k in outputs[0]}


def _chunks(array, size):
    return [array[i : i + size] for i in range(0, len(array), size)]


@functools.partial(nnx.jit, static_argnames=("num_frames", "per_mode_timing"))
def _generate(vae, recurrent, generator, neutral, label, rng, *, num_frames, per_mode_timing):
    return generate(vae, recurrent, generator, neutral, label, rng, num_frames, per_mode_timing)


def generate_for_inputs(models, neutral, num_classes, num_frames, config, batch_size=256):
    """Every test input with every class -> (N, C, K, T, 68, 2)."""
    n = len(neutral)
    inputs = np.repeat(neutral, num_classes, axis=0)
    labels = np.tile(np.arange(num_classes, dtype=np.int32), n)
    fn = functools.partial(_generate, num_frames=num_frames, per_mode_timing=config.multimode.per_mode_timing)
    networks = (models["vae"], models["recurrent"], models["multimode"].generator)
    rng = jax.random.PRNGKey(config.seed)
    outputs = []
    for i, start in enumerate(range(0, len(inputs), batch_size)):
        chunk = slice(start, start + batch_size)
        outputs.append(
            jax.device_get(fn(*networks, inputs[chunk], labels[chunk], jax.random.fold_in(rng, i)))
        )
    generated = np.concatenate(outputs)
    return generated.reshape(n, num_classes, *generated.shape[1:])


def landmark_metrics(models, test, train, info, config) -> dict[str, float]:
    """All landmark metrics (DESIGN §7). test/train: arrays from pipeline.load_split."""
    results: dict[str, float] = {}
    sequences = test["landmarks"]
    iod = landmarks.inter_ocular_distance(sequences[:, 0])  # (N,)

    # VAE reconstruction of every test frame.
    vae = models["vae"]
    recon = nnx.jit(lambda vae, x: vae.decode(vae.encode(x)[0]))(vae, sequences)
    frame_error = landmarks.point_error(np.asarray(recon), sequences).mean(-1)  # (N, T)
    results["vae_nme"] = float((frame_error / iod[:, None]).mean())

    # The classifier on real test sequences.
    classifier = models["classifier"]
    real = _classify(classifier, sequences)
    results["classifier_test_accuracy"] = float((real["class_logits"].argmax(-1) == test["label"]).mean())
    if info.num_styles:
        results["style_classifier_accuracy"] = float(
            (real["style_logits"].argmax(-1) == test["style"]).mean()
        )

    if "multimode" not in models:
        return results

    # K generated sequences for each test input and each class.
    max_inputs = config.eval.max_inputs or len(sequences)
    neutral = sequences[:max_inputs, 0]
    input_iod = iod[:max_inputs]
    generated = generate_for_inputs(models, neutral, info.num_classes, info.num_frames, config)
    n, num_classes, num_modes = generated.shape[:3]
    flat = generated.reshape(-1, *generated.shape[3:])
    fake = _classify(classifier, flat)
    requested = np.broadcast_to(np.arange(num_classes)[None, :, None], (n, num_classes, num_modes))
    results["class_accuracy"] = float(
        (fake["class_logits"].argmax(-1).reshape(n, num_classes, num_modes) == requested).mean()
    )
    if len(real["features"]) > 1:  # a covariance needs two sequences
        results["landmark_fd"] = frechet_distance(fake["features"], real["features"])

    if num_modes > 1:
        results["apd_generated"] = float(
            pairwise_distance(generated, input_iod[:, None]).mean()
        )
    results["apd_real"] = _apd_real(test, iod)
    if "apd_generated" in results and results["apd_real"] > 0:
        results["apd_ratio"] = results["apd_generated"] / results["apd_real"]

    # Does the generator keep the face? Frame 0 against the input, and the
    # points a smile should not move, beside the same figure for real data.
    results["start_nme"] = float(
        (landmarks.point_error(generated[:, :, :, 0], neutral[:, None, None]).mean(-1)
         / input_iod[:, None, None]).mean()
    )
    rigid = list(RIGID_POINTS)
    results["identity_nme_generated"] = float(
        (landmarks.point_error(generated[..., rigid, :], neutral[:, None, None, None, rigid, :]).mean((-2, -1))
         / input_iod[:, None, None]).mean()
    )
    results["identity_nme_real"] = float(
        (landmarks.point_error(sequences[:, :, rigid], sequences[:, :1, rigid]).mean((-2, -1)) / iod).mean()
    )

    if info.num_styles:
        styles = fake["style_logits"].argmax(-1).reshape(n, num_classes, num_modes)
        majors = major_styles(train["label"], train["style"], info.num_classes, info.num_styles)
        coverage, distinct = [], []
        for i in range(n):
            for c in range(num_classes):
                found = set(styles[i, c].tolist())
                coverage.append(len(found & set(majors[c].tolist())) / max(len(majors[c]), 1))
                distinct.append(len(found))
        results["mode_coverage"] = float(np.mean(coverage))
        results["distinct_styles_per_input"] = float(np.mean(distinct))
    return results


def _apd_real(test, iod) -> float:
    """APD among the real sequences of one subject and class, averaged over
    the (subject, class) groups that have at least two sequences."""
    values = []
    keys = np.char.add(test["subject"].astype(str), "/" + test["label"].astype(str))
    for key in np.unique(keys):
        members = np.flatnonzero(keys == key)
        if len(members) >= 2:
            values.append(pairwise_distance(test["landmarks"][members], iod[members].mean()))
    return float(np.mean(values)) if values else 0.0


def evaluate(config, workdir: str, builder=None, models=None) -> dict[str, float]:
    """Computes the metrics and writes DIR/eval.json; returns them."""
    from cmm_jax import train

    builder = builder or pipeline.load_builder(config.dataset)
    info = pipeline.dataset_info(builder)
    models = dict(models or {})
    for name in ("vae", "classifier", "recurrent", "multimode", "translator"):
        if name not in models:
            try:
                models[name] = train.load_model(name, config, info, workdir)
            except UserError:
                if name in ("vae", "classifier"):
                    raise
                if name != "translator":
                    announce(f"no trained {name} stage: generation metrics skipped")
    test = pipeline.load_split(builder.as_data_source("test"))
    train_split = pipeline.load_split(builder.as_data_source("train"))
    results = landmark_metrics(models, test, train_split, info, config)
    results = {k: round(v, 6) for k, v in results.items()}
    if jax.process_index() == 0:
        path = os.path.join(workdir, "eval.json")
        with open(path + ".tmp", "w") as f:
            json.dump(results, f, indent=2, sort_keys=True)
        os.replace(path + ".tmp", path)
        if "multimode" in models:
            from cmm_jax import report, sample

            report.write_samples(models, test, info, config, workdir)
            sample.write_run_samples(config, info, models, os.path.join(workdir, "samples"))
    return results


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config, workdir = flags.FLAGS.config, flags.FLAGS.workdir
    run_or_exit(lambda: print(json.dumps(evaluate(config, workdir), indent=2)))


if __name__ == "__main__":
    # Flags are defined here, not at import: cmm_jax.main imports this module.
    config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
    flags.DEFINE_string("workdir", None, "Folder of a training run.")
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main)
