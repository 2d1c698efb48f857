"""The training stages of CMM-Net: what each builds and what it minimises.

Stages run in `STAGE_ORDER`; a stage's loss may use the trained, frozen models
of the stages it `requires`. Everything here is a pure function of
(model, frozen models, batch, rng); the loop lives in `cmm_jax.train`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from cmm_jax import translate
from cmm_jax.data.pipeline import DatasetInfo
from cmm_jax.models.classifier import SequenceClassifier, classifier_loss
from cmm_jax.models.judge import SequenceJudge, judge_loss
from cmm_jax.models.multimode import ModeIdentifier, MultiModeGenerator, multimode_losses
from cmm_jax.models.translator import TranslatorStage
from cmm_jax.models.recurrent import ConditionalRecurrent, NoisePosterior, gaussian_kl, recurrent_loss
from cmm_jax.models.vae import LandmarkVAE, vae_loss


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    build: Callable  # (config, info, rngs) -> nnx.Module
    loss: Callable  # (model, frozen: dict, batch, rng, config) -> (loss, metrics)
    requires: tuple[str, ...] = ()
    # (config, train source) -> {name: nnx.Module}: more frozen inputs that are
    # made, not trained (the translator's face bank).
    extras: Callable | None = None


# What the mode decoders are trained on (config.multimode.train_timing):
# "random": a random draw of the recurrent net, as at generation;
# "matched": the draw closest to the real sequence out of recurrent.num_samples;
# "posterior": the recurrent net unrolled from noise inferred from the real
# sequence (NoisePosterior), with a KL term towards the generation prior.
TRAIN_TIMINGS = ("random", "matched", "posterior")


class MultiModeStage(nnx.Module):
    """What the multi-mode stage trains: the generator, its mode identifier
    and, with train_timing="posterior", the noise posterior."""

    def __init__(self, config, info: DatasetInfo, *, rngs: nnx.Rngs):
        variation_dim = config.multimode.get("variation_dim", 0)
        self.generator = MultiModeGenerator(
            config.num_modes,
            config.vae.latent_dim,
            info.num_classes,
            config.multimode.hidden,
            rngs=rngs,
            variation_dim=variation_dim,
        )
        self.mode_identifier = ModeIdentifier(
            config.num_modes,
            config.classifier.hidden,
            config.classifier.features,
            rngs=rngs,
        )
        self.posterior = nnx.data(
            NoisePosterior(
                (info.num_frames - 1, config.recurrent.noise_dim), config.classifier.hidden,
                config.classifier.features, rngs=rngs,
            ) if config.multimode.get("train_timing", "matched") == "posterior" else None
        )
        self.variation_posterior = nnx.data(
            NoisePosterior((variation_dim,), config.classifier.hidden, config.classifier.features, rngs=rngs)
            if variation_dim else None
        )


def generate(vae, recurrent, generator, neutral, label, rng, num_frames: int, per_mode_timing: bool,
             shared_noise: bool = False, temperature: float = 1.0):
    """The whole landmark pipeline: one neutral face + class -> K sequences.

    With per_mode_timing each mode decodes its own draw of the recurrent net
    (its own timing and intensity); otherwise all K share one draw, as in the
    paper. shared_noise: every input of the batch gets the same noise (to see
    what the face alone changes). temperature scales every noise draw
    (config.multimode.temperature; 1 = the learnt law). neutral: (B, 68, 2) in [-1, 1]; label: (B,)
    -> (B, K, T, 68, 2).
    """
    z0, _ = vae.encode(neutral)
    timing_rng, variation_rng = jax.random.split(rng)
    draws = recurrent.sample(
        z0, label, timing_rng, generator.num_modes if per_mode_timing else 1, num_frames, shared=shared_noise,
        temperature=temperature,
    )
    embeddings = jnp.swapaxes(draws, 0, 1) if per_mode_timing else draws[0]  # (B, K, T, D) | (B, T, D)
    variation = None
    if generator.variation_dim:  # one draw per input and mode
        shape = (1 if shared_noise else neutral.shape[0], generator.num_modes, generator.variation_dim)
        variation = temperature * jax.random.normal(variation_rng, shape)
        variation = jnp.broadcast_to(variation, (neutral.shape[0],) + shape[1:])
    return generator(embeddings, neutral, label, variation)


def _vae_loss(model, frozen, batch, rng, config):
    frames = batch["landmarks"].reshape(-1, *batch["landmarks"].shape[-2:])
    return vae_loss(model, frames, rng, config.vae.beta)


def _classifier_loss(model, frozen, batch, rng, config):
    return classifier_loss(model, batch["landmarks"], batch["label"], batch["style"])


def _judge_loss(model, frozen, batch, rng, config):
    # Extra tracker-like noise on the inputs: without it the judge memorises
    # the training clips (train 0.99, validation 0.77 on smile_synth).
    sequences = batch["landmarks"] + config.judge.input_noise * jax.random.normal(rng, batch["landmarks"].shape)
    return judge_loss(model, sequences, batch["label"], batch["style"])


def _recurrent_loss(model, frozen, batch, rng, config):
    target_z, _ = frozen["vae"].encode(batch["landmarks"])
    return recurrent_loss(
        model, jax.lax.stop_gradient(target_z), batch["label"], rng, config.recurrent.num_samples
    )


def matched_embeddings(vae, recurrent, sequences, label, rng, num_samples: int):
    """The recurrent net's draw closest to each real sequence, out of num_samples.

    Training the multi-mode stage on a draw whose timing matches the real
    sequence lets the modes learn the sharp shape of each way of smiling,
    instead of hedging over timings they cannot know. At test time the draw is
    random (`generate`). sequences: (B, T, 68, 2) -> embeddings (B, T, D).
    """
    target_z, _ = vae.encode(sequences)
    draws = recurrent.sample(target_z[:, 0], label, rng, num_samples, target_z.shape[1])  # (M, B, T, D)
    errors = jnp.sum((draws - target_z) ** 2, axis=(-2, -1))  # (M, B)
    return draws[jnp.argmin(errors, axis=0), jnp.arange(target_z.shape[0])]


def _multimode_loss(model: MultiModeStage, frozen, batch, rng, config):
    sequences, label = batch["landmarks"], batch["label"]
    timing = config.multimode.get("train_timing", "matched")
    kl = variation_kl = 0.0
    rng, variation_rng = jax.random.split(rng)
    variation = None
    if model.variation_posterior is not None:  # inferred from the real sequence, shared by the K modes
        mean, log_var = model.variation_posterior(sequences)
        variation = mean + jnp.exp(0.5 * log_var) * jax.random.normal(variation_rng, mean.shape)
        variation_kl = gaussian_kl(mean, log_var)
    if timing == "matched":
        embeddings = matched_embeddings(
            frozen["vae"], frozen["recurrent"], sequences, label, rng, config.recurrent.num_samples
        )
        generated = model.generator(embeddings, sequences[:, 0], label, variation)
    elif timing == "posterior":
        mean, log_var = model.posterior(sequences)
        noise = mean + jnp.exp(0.5 * log_var) * jax.random.normal(rng, mean.shape)
        z0, _ = frozen["vae"].encode(sequences[:, 0])
        embeddings = frozen["recurrent"](z0, label, noise)
        generated = model.generator(embeddings, sequences[:, 0], label, variation)
        kl = gaussian_kl(mean, log_var)
    elif variation is not None:
        raise ValueError("multimode.variation_dim needs train_timing 'posterior' or 'matched'")
    else:
        generated = generate(
            frozen["vae"], frozen["recurrent"], model.generator, sequences[:, 0], label, rng,
            sequences.shape[1], config.multimode.per_mode_timing,
            temperature=config.multimode.get("temperature", 1.0),  # train on what generation draws
        )
    loss, metrics = multimode_losses(
        generated,
        sequences,
        batch["label"],
        model.mode_identifier,
        frozen["classifier"],
        config.multimode,
    )
    if timing == "posterior":
        loss = loss + config.multimode.kl_weight * kl
        metrics = dict(metrics, loss=loss, kl=kl)
    if variation is not None:
        loss = loss + config.multimode.variation_kl_weight * variation_kl
        metrics = dict(metrics, loss=loss, variation_kl=variation_kl)
    return loss, metrics


STAGES = {
    "vae": Stage(
        "vae",
        lambda c, info, rngs: LandmarkVAE(c.vae.latent_dim, c.vae.hidden, rngs=rngs),
        _vae_loss,
    ),
    "classifier": Stage(
        "classifier",
        lambda c, info, rngs: SequenceClassifier(
            info.num_classes, info.num_styles, c.classifier.hidden, c.classifier.features, rngs=rngs
        ),
        _classifier_loss,
    ),
    # Scores generated sequences in `evaluate`; no stage may require it.
    "judge": Stage(
        "judge",
        lambda c, info, rngs: SequenceJudge(
            info.num_classes, info.num_styles, c.judge.hidden, c.judge.features, rngs=rngs
        ),
        _judge_loss,
    ),
    "recurrent": Stage(
        "recurrent",
        lambda c, info, rngs: ConditionalRecurrent(
            c.vae.latent_dim, info.num_classes, c.recurrent.noise_dim, c.recurrent.hidden, rngs=rngs
        ),
        _recurrent_loss,
        requires=("vae",),
    ),
    "multimode": Stage(
        "multimode",
        lambda c, info, rngs: MultiModeStage(c, info, rngs=rngs),
        _multimode_loss,
        requires=("vae", "recurrent", "classifier"),
    ),
    "translator": Stage(
        "translator",
        lambda c, info, rngs: TranslatorStage(c, rngs=rngs),
        translate.stage_loss,
        extras=translate.face_bank_for,
    ),
}
STAGE_ORDER = ("vae", "classifier", "judge", "recurrent", "multimode", "translator")
