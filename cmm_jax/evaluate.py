"""Metrics of the landmark generator on held-out subjects, beside baselines.

`python -m cmm_jax.evaluate --config=experiments/smile.py --workdir=DIR`
writes DIR/eval.json from the test split, and draws the run's samples again
(DIR/samples/, as training's evaluation does); `--config.eval.split=validation`
writes DIR/eval_validation.json instead (every choice is made on it) and no
samples. Definitions (BUILD.md "Metrics"): distances are divided by the
inter-ocular distance (outer eye corners) of the input's neutral face; a test
input is the neutral first frame of a held-out sequence. Sequences are scored
by the judge (`models/judge.py`), which no stage trains against, and on
smile_synth also by the analytic action-unit fit (`data/synth_fit.py`).
References are the noise-free clips where the dataset has them.
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import os

import jax
import numpy as np
from flax import nnx
from absl import app, flags, logging
from ml_collections import config_flags

from cmm_jax import (baselines, compilation_cache, configuration, distributed, inference, landmarks, metrics, report,
                     run_dir, sample, sharding, timing)
from cmm_jax.configuration import STAGE_ORDER
from cmm_jax.data import pipeline, synth, synth_fit
from cmm_jax.errors import UserError, run_or_exit
from cmm_jax.files import write_json
from cmm_jax.metric_writer import announce

# Points a smile should not move: the jaw line without the chin region, the nose.
RIGID_POINTS = landmarks.JAW[:5] + landmarks.JAW[12:] + landmarks.NOSE_BRIDGE + landmarks.NOSE_BOTTOM
# Inputs whose face sensitivity is measured (one per held-out person), and the
# seeds (model) or clip draws (data) per class and mode it averages over.
SENSITIVITY_FACES = 40
SENSITIVITY_DRAWS = 3
# The stages evaluation waits for: the VAE encodes the inputs, and a run
# trained stage by stage (`--config.stages=vae`, then the next) is evaluated
# once the stage after it exists (the classifier gives only its own accuracy;
# the judge scores the generated sequences). The metrics of any other missing
# stage are skipped.
NEEDED_STAGES = ("vae", "classifier")


def _classify(classifier, sequences, batch_size=512):
    fn = nnx.jit(lambda model, s: model(s))
    outputs = [jax.device_get(fn(classifier, sequences[i : i + batch_size]))
               for i in range(0, len(sequences), batch_size)]
    return {k: np.concatenate([o[k] for o in outputs]) for k in outputs[0]}


def _model_face_motion(models, faces, num_classes, num_frames, config) -> np.ndarray:
    """The model's motions for each face with the SAME noise for every face:
    (F, draws, C, K, T-1, 68, 2)."""
    networks = (models["vae"], models["recurrent"], models["multimode"].generator)
    out = []
    for draw in range(SENSITIVITY_DRAWS):
        per_class = []
        for c in range(num_classes):
            rng = jax.random.fold_in(jax.random.PRNGKey(config.seed + 1), draw)
            generated = inference.generate_batch(*networks, faces, np.full(len(faces), c, np.int32), rng, num_frames=num_frames,
                                  per_mode_timing=config.multimode.per_mode_timing, shared_noise=True,
                                  temperature=float(config.multimode.get("temperature", 1.0)))
            per_class.append(metrics.displacements(np.asarray(generated)))
        out.append(np.stack(per_class, 1))
    return np.stack(out, 1)


class SyntheticLaw:
    """What smile_synth knows about its own data: each person's identity, the
    generator that made the clips, the analytic judge and the class ceiling."""

    def __init__(self, builder_config, num_frames: int):
        self.seed, self.num_frames = builder_config.seed, num_frames
        self._identities: dict[str, dict] = {}

    def _identity(self, subject: str):
        """The person's identity, drawn once (read-only: the callers copy before changing it)."""
        if subject not in self._identities:
            self._identities[subject] = synth.identity_of(self.seed, int(str(subject).rsplit("_", 1)[-1]))
        return self._identities[subject]

    def _render(self, identity, label, latents) -> np.ndarray:
        clip = synth.render_clip(identity, label, latents, num_frames=self.num_frames, noise_std=0.0)
        return landmarks.normalize(clip["clean"])

    def draw_clean_clips(self, subject, label, rng, num) -> np.ndarray:
        """K clips of the person: their whole identity, hidden traits included."""
        identity = self._identity(subject)
        return np.stack([self._render(identity, label, synth.clip_latents(rng, identity, label))
                         for _ in range(num)])

    def draw_face_only_clips(self, subject, label, rng, num) -> np.ndarray:
        """K clips for the person's face: what the neutral face does not show
        (expressivity, smile type, style repertoire) drawn afresh for each clip."""
        clips = []
        for _ in range(num):
            identity = synth.with_hidden_traits(self._identity(subject), rng)
            clips.append(self._render(identity, label, synth.clip_latents(rng, identity, label)))
        return np.stack(clips)

    def face_motion(self, subjects, num_classes: int, num_draws: int) -> np.ndarray:
        """The data's motions for fixed clip draws on each person's face, the
        traits a face does not show set to the population's typical values:
        (F, C, draws, T-1, 68, 2)."""
        identities = [synth.with_hidden_traits(self._identity(s)) for s in subjects]
        motion = []
        for c in range(num_classes):
            draws = [synth.clip_latents(np.random.default_rng([self.seed, 7, c, d]), identities[0], c)
                     for d in range(num_draws)]
            motion.append([[self._render(identity, c, latents) for latents in draws] for identity in identities])
        return metrics.displacements(np.array(motion)).swapaxes(0, 1)

    def ceiling(self) -> float:
        return float(synth.bayes_class_ceiling())

    def analytic_judge(self, train):
        judge = synth_fit.AnalyticJudge()
        judge.fit(landmarks.denormalize(train["landmarks"]), train["label"], train["style"])
        return judge


def _per_person_targets(data, num_classes):
    """{(subject, class): reference motions (J, T-1, 68, 2)} of the split's clips."""
    motion = metrics.displacements(data["reference"])
    return {(s, c): motion[(data["subject"] == s) & (data["label"] == c)]
            for s in np.unique(data["subject"]) for c in range(num_classes)}


def _fd_figures(features, label, reference_features, reference_label, class_names, rng) -> dict[str, float]:
    """landmark_fd_<class>: the Fréchet distance per class, the first set
    subsampled to the reference's count, and their mean landmark_fd; {} when
    a class has too few sequences."""
    distances = []
    for c in range(len(class_names)):
        reference = reference_features[reference_label == c]
        own = features[label == c]
        if len(reference) < 2 or len(own) < len(reference):
            return {}
        distances.append(metrics.frechet_distance(own[rng.choice(len(own), len(reference), replace=False)], reference))
    figures = {f"landmark_fd_{name}": value for name, value in zip(class_names, distances)}
    return dict(figures, landmark_fd=float(np.mean(distances)))


class _Scorer:
    """Scores any set of generated sequences (N, C, K, T, 68, 2) the same way."""

    def __init__(self, models, data, train, info, neutral, subjects, analytic):
        self.judge, self.info, self.subjects = models.get("judge"), info, subjects
        self.neutral_iod = landmarks.inter_ocular_distance(neutral)
        self.analytic = analytic
        self.targets = _per_person_targets(data, info.num_classes)
        self.true_styles = {key: set(data["style"][(data["subject"] == key[0]) & (data["label"] == key[1])].tolist())
                            for key in self.targets} if info.num_styles else {}
        self.majors = (metrics.major_styles(train["label"], train["style"], info.num_classes, info.num_styles)
                       if info.num_styles else [])
        self.apd_real = _apd_real(data)
        self.reference_label = data["label"]
        self.reference_features = _classify(self.judge, data["reference"])["features"] if self.judge else None

    def __call__(self, generated) -> dict[str, float]:
        n, num_classes, num_modes = generated.shape[:3]
        results = {}
        motion = metrics.displacements(generated)
        results["conditional_error"] = float(np.mean([
            metrics.best_of_k_error(motion[i, c], self.targets[(self.subjects[i], c)]).mean()
            for i in range(n) for c in range(num_classes) if len(self.targets[(self.subjects[i], c)])
        ]))
        if num_modes > 1:
            results["apd_generated"] = float(metrics.pairwise_distance(generated, self.neutral_iod[:, None]).mean())
            if self.apd_real > 0:
                results["apd_ratio"] = results["apd_generated"] / self.apd_real
        flat = generated.reshape(-1, *generated.shape[3:])
        if self.analytic is not None:
            verdict = self.analytic.predict(landmarks.denormalize(flat))
            results["implausible_rate"] = float(np.mean(verdict["implausible"]))
        if self.judge is None:
            return results
        judged = _classify(self.judge, flat)
        requested = np.broadcast_to(np.arange(num_classes)[None, :, None], (n, num_classes, num_modes))
        predicted = judged["class_logits"].argmax(-1).reshape(n, num_classes, num_modes)
        results["class_accuracy"] = float((predicted == requested).mean())
        results.update(_fd_figures(judged["features"], requested.reshape(-1), self.reference_features,
                                   self.reference_label, self.info.class_names, np.random.default_rng(0)))
        if self.info.num_styles:
            styles = judged["style_logits"].argmax(-1).reshape(n, num_classes, num_modes)
            coverage, distinct, recall = [], [], []
            for i in range(n):
                for c in range(num_classes):
                    found = set(styles[i, c].tolist())
                    coverage.append(len(found & set(self.majors[c].tolist())) / max(len(self.majors[c]), 1))
                    distinct.append(len(found))
                    shown = self.true_styles[(self.subjects[i], c)]
                    if shown:
                        recall.append(len(found & shown) / len(shown))
            results["mode_coverage"] = float(np.mean(coverage))
            results["distinct_styles_per_input"] = float(np.mean(distinct))
            results["style_recall"] = float(np.mean(recall))
        return results


def _real_row(data, train, info, judge, scorer, real_figures) -> dict[str, float]:
    """The data's own figures: the ceiling every generator is read against.
    real_figures: the judge's class accuracy and the implausible rate on the
    held-out clips, already computed by `landmark_metrics`."""
    row = {}
    errors = []
    for key, motion in scorer.targets.items():
        for j in range(len(motion)):
            others = np.delete(motion, j, axis=0)
            if len(others):
                errors.append(metrics.best_of_k_error(others, motion[j : j + 1])[0])
    if errors:
        row["conditional_error"] = float(np.mean(errors))  # best of the person's other clips
    row["apd_generated"] = scorer.apd_real
    row.update(real_figures)
    if judge is not None:
        # The floor: training clips against the held-out ones, same count, same features.
        train_features = _classify(judge, train["reference"])["features"]
        row.update(_fd_figures(train_features, train["label"], scorer.reference_features, data["label"],
                               info.class_names, np.random.default_rng(0)))
    return row


def landmark_metrics(models, data, train, info, config, law: SyntheticLaw | None = None) -> dict:
    """All landmark metrics (BUILD.md "Metrics") of the model and its baselines.

    data/train: arrays from pipeline.load_split. Returns the model's figures at
    the top level, and `baselines` = {row: figures} for face_blind,
    face_blind_draws, nearest_neighbour, oracle, oracle_draws, oracle_face and
    oracle_face_draws (smile_synth: the data's own law for the person, knowing
    everything / only what the face shows, as K central clips or K random
    ones), model_k1
    (the model's first mode only) and real (the data's own clips).
    """
    results: dict = {}
    real_figures: dict = {}  # the real row's figures that the lines below compute anyway
    sequences = data["landmarks"]
    iod = landmarks.inter_ocular_distance(sequences[:, 0])  # (N,)
    max_inputs = config.eval.max_inputs or len(sequences)
    neutral, subjects = sequences[:max_inputs, 0], data["subject"][:max_inputs]
    num_classes, num_modes = info.num_classes, config.num_modes
    # Face sensitivity: one input per person, the same randomness for every face.
    _, first = np.unique(subjects, return_index=True)
    first = np.sort(first)[:SENSITIVITY_FACES]
    law_rows = None
    if law is not None and "multimode" in models:
        law_rows = _Beside(_law_rows, law, neutral, subjects, first, num_classes, num_modes, config.seed)

    # VAE reconstruction of every held-out frame.
    vae = models["vae"]
    recon = nnx.jit(lambda vae, x: vae.decode(vae.encode(x)[0]))(vae, sequences)
    frame_error = landmarks.point_error(np.asarray(recon), sequences).mean(-1)  # (N, T)
    results["vae_nme"] = float((frame_error / iod[:, None]).mean())

    # The loss classifier and the judge on real held-out sequences (as recorded, noise included).
    for name, prefix in (("classifier", "classifier"), ("judge", "judge")):
        if name not in models:
            continue
        real = _classify(models[name], sequences)
        results[f"{prefix}_test_accuracy"] = float((real["class_logits"].argmax(-1) == data["label"]).mean())
        if name == "judge":
            real_figures["class_accuracy"] = results["judge_test_accuracy"]
        if info.num_styles:
            results[f"{prefix}_style_accuracy"] = float((real["style_logits"].argmax(-1) == data["style"]).mean())
    analytic = None
    if law is not None:
        results["bayes_class_ceiling"] = law.ceiling()
        analytic = law.analytic_judge(train)
        verdict = analytic.predict(landmarks.denormalize(sequences))
        results["analytic_class_accuracy"] = float((verdict["class_prob"].argmax(-1) == data["label"]).mean())
        real_figures["implausible_rate"] = float(np.mean(verdict["implausible"]))

    if "multimode" not in models:
        return results

    generated = inference.generate_for_inputs(models, neutral, num_classes, info.num_frames, config)
    rows = {
        "model": generated,
        "model_k1": generated[:, :, :1],
        "face_blind": baselines.face_blind(train, neutral, num_classes, num_modes, seed=config.seed),
        "face_blind_draws": baselines.face_blind_draws(train, neutral, num_classes, num_modes, seed=config.seed),
        "nearest_neighbour": baselines.nearest_neighbour(train, neutral, num_classes, num_modes),
    }
    scorer = _Scorer(models, data, train, info, neutral, subjects, analytic)
    table = {name: scorer(sequences_of_row) for name, sequences_of_row in rows.items()}
    if law_rows is not None:
        oracle_rows, data_spread = law_rows.result()
        rows.update(oracle_rows)
        table.update({name: scorer(sequences_of_row) for name, sequences_of_row in oracle_rows.items()})
    table["real"] = _real_row(data, train, info, models.get("judge"), scorer, real_figures)

    faces = neutral[first]
    spreads = {
        "model": metrics.face_spread(_model_face_motion(models, faces, num_classes, info.num_frames, config)),
        "face_blind": metrics.face_spread(metrics.displacements(rows["face_blind"][first])),
        "face_blind_draws": metrics.face_spread(metrics.displacements(rows["face_blind_draws"][first])),
        "nearest_neighbour": metrics.face_spread(metrics.displacements(rows["nearest_neighbour"][first])),
    }
    if law is not None:
        results["face_spread_data"] = data_spread
        for name, spread in spreads.items():
            table[name]["face_spread"] = spread
            table[name]["face_sensitivity"] = spread / data_spread
    else:
        for name, spread in spreads.items():
            table[name]["face_spread"] = spread

    results.update(table.pop("model"))
    results["baselines"] = table
    results["apd_real"] = scorer.apd_real
    # Does the generator keep the face? Frame 0 against the input, and the
    # points a smile should not move, beside the same figure for real data.
    results["start_nme"] = float(
        (landmarks.point_error(generated[:, :, :, 0], neutral[:, None, None]).mean(-1)
         / iod[:max_inputs, None, None]).mean()
    )
    rigid = list(RIGID_POINTS)
    results["identity_nme_generated"] = float(
        (landmarks.point_error(generated[..., rigid, :], neutral[:, None, None, None, rigid, :]).mean((-2, -1))
         / iod[:max_inputs, None, None]).mean()
    )
    reference = data["reference"]
    results["identity_nme_real"] = float(
        (landmarks.point_error(reference[:, :, rigid], reference[:, :1, rigid]).mean((-2, -1)) / iod).mean()
    )
    return results


def _law_rows(law: SyntheticLaw, neutral, subjects, first, num_classes: int, num_modes: int, seed: int):
    """What smile_synth's own law gives, whatever the model: the oracle rows
    (the person's law as K central clips or K draws, knowing everything or only
    the face) and the data's face spread (of `face_sensitivity`) over the
    inputs `first`. NumPy on one core: `landmark_metrics` runs it beside the
    rest (`_Beside`)."""
    rows = {
        "oracle": baselines.oracle(neutral, subjects, num_classes, num_modes, law.draw_clean_clips, seed=seed),
        "oracle_draws": baselines.oracle_draws(neutral, subjects, num_classes, num_modes, law.draw_clean_clips,
                                               seed=seed),
        "oracle_face": baselines.oracle(neutral, subjects, num_classes, num_modes, law.draw_face_only_clips,
                                        seed=seed),
        "oracle_face_draws": baselines.oracle_draws(neutral, subjects, num_classes, num_modes,
                                                    law.draw_face_only_clips, seed=seed),
    }
    return rows, metrics.face_spread(law.face_motion(subjects[first], num_classes, SENSITIVITY_DRAWS * num_modes))


def _send_result(sender, function, args) -> None:
    """The helper process of `_Beside`: function(*args), or the exception it
    raised, sent back through the pipe."""
    os.environ["JAX_PLATFORMS"] = "cpu"  # the helper process never takes an accelerator from this one
    try:
        outcome = (True, function(*args))
    except Exception as error:  # noqa: BLE001 -- raised again in the main process
        outcome = (False, error)
    sender.send(outcome)
    sender.close()


class _Beside:
    """function(*args) in a second process, while this one goes on (the
    evaluation's NumPy work runs on one core, and the other would wait);
    `result()` waits for it. The process is spawned, not forked: this one runs
    XLA's threads. With one core, or where no process can be started or it
    dies, the function runs here when its result is asked for: the same result
    either way. The process is a daemon, so an error before `result()` ends the
    program at once rather than after the helper's work; `close()` ends it
    earlier."""

    def __init__(self, function, *args):
        self._here = functools.partial(function, *args)
        self._process = self._receiver = None
        if (os.cpu_count() or 1) > 1:
            context = multiprocessing.get_context("spawn")
            receiver, sender = context.Pipe(duplex=False)
            process = context.Process(target=_send_result, args=(sender, function, args), daemon=True)
            try:
                process.start()
            except (OSError, RuntimeError):
                receiver.close()
            else:
                self._process, self._receiver = process, receiver
            finally:
                sender.close()

    def result(self):
        if self._process is None:
            return self._here()
        try:
            succeeded, value = self._receiver.recv()
        except EOFError:  # the process died without an answer
            return self._here()
        finally:
            self.close()
        if not succeeded:
            raise value
        return value

    def close(self) -> None:
        """End the helper process now, whatever it is doing."""
        if self._process is not None:
            self._process.terminate()
            self._process.join()
            self._receiver.close()
            self._process = self._receiver = None


def _apd_real(data) -> float:
    """APD among the reference sequences of one subject and class, averaged over
    the (subject, class) groups that have at least two sequences."""
    values = []
    reference = data["reference"]
    iod = landmarks.inter_ocular_distance(reference[:, 0])
    keys = np.char.add(data["subject"].astype(str), "/" + data["label"].astype(str))
    for key in np.unique(keys):
        members = np.flatnonzero(keys == key)
        if len(members) >= 2:
            values.append(metrics.pairwise_distance(reference[members], iod[members].mean()))
    return float(np.mean(values)) if values else 0.0


def _rounded(value):
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return round(value, 6) if isinstance(value, float) else value


def evaluate(config, workdir: str, builder=None, models=None) -> dict:
    """Computes the metrics on config.eval.split and writes them
    (eval.json for test, eval_<split>.json otherwise; `run_dir.eval_path`);
    after a test split also the run's samples. Returns the metrics.

    models: trained models by stage name; the others are loaded from the run.
    In a multi-process run every process computes the same metrics on its own
    devices (`train.train` returns models there); process 0 writes them."""
    configuration.check_eval(config)
    builder = builder or distributed.primary_first(lambda: pipeline.load_builder(config.dataset))
    info = pipeline.dataset_info(builder)
    split = config.eval.get("split", "test")
    if split not in builder.info.splits:
        raise UserError(f"eval.split={split!r}, but {config.dataset.name} has the splits "
                        f"{', '.join(sorted(builder.info.splits))}")
    models = dict(models or {})
    for name in STAGE_ORDER:
        if name not in models:
            try:
                models[name] = run_dir.load_model(name, config, info, workdir, sharding.local_mesh())
            except UserError:
                if name in NEEDED_STAGES:
                    raise
                if name != "translator":
                    announce(f"no trained {name} stage: the metrics that need it are skipped")
    if "residuals" not in models:
        models["residuals"] = run_dir.load_residuals(config, workdir)
    data = pipeline.load_split(builder.as_data_source(split))
    train_split = pipeline.load_split(builder.as_data_source("train"))
    law = SyntheticLaw(builder.builder_config, info.num_frames) if config.dataset.name == "smile_synth" else None
    with timing.phase("evaluate"):
        results = _rounded({"split": split, **landmark_metrics(models, data, train_split, info, config, law)})
    if jax.process_index() == 0:
        path = run_dir.eval_path(workdir, split, config.eval.get("tag", ""))

        def write():
            write_json(path, results, sort_keys=True)

        write()
        if "multimode" in models and split == "test":
            samples = run_dir.samples_dir(workdir)
            render_metrics = config.eval.get("render_metrics", False)
            with timing.phase("samples"):
                report.write_samples(models, data, info, config, samples)
                measured = sample.write_run_samples(config, info, models, samples, run_dir.read_input_range(workdir),
                                                    metrics=render_metrics)
            if render_metrics:  # the landmark figures are on disk already; these join them
                results["render"] = _rounded({name: _json_ready(m) for name, m in measured.items()})
                write()
    return results


def _json_ready(metrics: dict) -> dict:
    """video_metrics' figures as JSON numbers (NaN, e.g. no widening to measure, as null)."""
    return {k: None if isinstance(v, float) and v != v else v for k, v in metrics.items() if k != "input_check"}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config, workdir = flags.FLAGS.config, os.path.expanduser(flags.FLAGS.workdir)
    logging.set_verbosity(logging.WARNING)  # Orbax logs every restore at INFO

    def run():
        distributed.initialize_from_flags()
        compilation_cache.enable_from_flags()
        results = evaluate(config, workdir)
        if jax.process_index() == 0:
            print(json.dumps(results, indent=2))

    run_or_exit(run)


if __name__ == "__main__":
    # Flags are defined here, not at import: cmm_jax.main imports this module.
    config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
    flags.DEFINE_string("workdir", None, "Folder of a training run.")
    distributed.define_flags()
    compilation_cache.define_flags()
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main, flags_parser=configuration.parse_flags)
