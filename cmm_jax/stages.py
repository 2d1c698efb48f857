"""The training stages of CMM-Net: what each builds and what it minimises.

Stages run in `configuration.STAGE_ORDER`; a stage's loss may use the
trained, frozen models of the stages it `requires`. Everything here is a pure
function of (model, frozen models, batch, rng, config): the networks are in
`cmm_jax.models`, the loop in `cmm_jax.train`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from cmm_jax import landmarks, warp
from cmm_jax.configuration import model_option
from cmm_jax.data import face_bank
from cmm_jax.data.pipeline import DatasetInfo
from cmm_jax.inference import generate
from cmm_jax.models.classifier import SequenceClassifier
from cmm_jax.models.discriminator import PatchDiscriminator
from cmm_jax.models.judge import SequenceJudge
from cmm_jax.models.layers import landmark_heatmaps
from cmm_jax.models.multimode import ModeIdentifier, MultiModeGenerator
from cmm_jax.models.recurrent import ConditionalRecurrent, NoisePosterior
from cmm_jax.models.translator import Translator
from cmm_jax.models.vae import LandmarkVAE


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    build: Callable  # (config, info, rngs) -> nnx.Module
    loss: Callable  # (model, frozen: dict, batch, rng, config) -> (loss, metrics)
    requires: tuple[str, ...] = ()
    # (config, train source) -> {name: nnx.Module}: more frozen inputs that are
    # made, not trained (the translator's face bank).
    extras: Callable | None = None

    def abstract(self, config, info) -> nnx.Module:
        """The model with every parameter's shape and none made (`nnx.eval_shape`):
        its structure, or the target a checkpoint is restored into."""
        return nnx.eval_shape(lambda: self.build(config, info, nnx.Rngs(0)))


# ---------------------------------------------------------------------------
# Loss terms


def cross_entropy(logits, labels):
    """Mean softmax cross-entropy with integer labels."""
    log_probs = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(log_probs, labels[..., None], axis=-1))


def classification_loss(model, sequences, label, style, log_style_loss: bool = True):
    """Cross-entropy of the class head, plus the style head's where the model
    has one (the loss classifier's and the judge's stages)."""
    out = model(sequences)
    class_loss = cross_entropy(out["class_logits"], label)
    metrics = {
        "class_loss": class_loss,
        "class_accuracy": jnp.mean(out["class_logits"].argmax(-1) == label),
    }
    loss = class_loss
    if "style_logits" in out:
        style_loss = cross_entropy(out["style_logits"], style)
        loss = loss + style_loss
        if log_style_loss:
            metrics["style_loss"] = style_loss
        metrics["style_accuracy"] = jnp.mean(out["style_logits"].argmax(-1) == style)
    metrics["loss"] = loss
    return loss, metrics


def vae_loss(model: LandmarkVAE, points, rng, beta: float):
    """points: (N, 68, 2). Returns (loss, metrics)."""
    recon, mean, log_var = model(points, rng)
    reconstruction = jnp.mean(jnp.sum((recon - points) ** 2, axis=(-2, -1)))
    kl = jnp.mean(
        0.5 * jnp.sum(jnp.exp(log_var) + mean**2 - 1.0 - log_var, axis=-1)
    )
    loss = reconstruction + beta * kl
    return loss, {"loss": loss, "reconstruction": reconstruction, "kl": kl}


def gaussian_kl(mean, log_var):
    """KL(N(mean, exp(log_var)) || N(0, I)), summed over all but the batch axis, mean over the batch."""
    terms = 0.5 * (jnp.exp(log_var) + mean**2 - 1.0 - log_var)
    return jnp.mean(jnp.sum(terms.reshape(terms.shape[0], -1), axis=-1))


def recurrent_loss(model: ConditionalRecurrent, target_z, label, rng, num_samples: int, face_noise: float = 0.0):
    """target_z: (B, T, D) encoder means of real sequences. Free-running L2.

    With num_samples > 1 it is a "variety" (best-of-M) loss: M noise draws,
    only the closest to the real sequence counts, so the noise learns to carry
    what the class and face leave open (timing, intensity) instead of being
    averaged away. face_noise > 0: the net reads each face moved by Gaussian
    noise of that many times the batch's spread of faces per dimension
    (`ConditionalRecurrent` face_offset), so that the motion it learns cannot
    hang on small differences between faces.
    """
    z0, offset = target_z[:, 0], None
    if face_noise > 0:
        rng, offset_rng = jax.random.split(rng)
        offset = face_noise * jnp.std(z0, axis=0) * jax.random.normal(offset_rng, z0.shape)
    predicted = model.sample(z0, label, rng, num_samples, target_z.shape[1], face_offset=offset)
    errors = jnp.mean(jnp.sum((predicted[:, :, 1:] - target_z[:, 1:]) ** 2, axis=-1), axis=-1)
    loss = jnp.mean(jnp.min(errors, axis=0))
    return loss, {"loss": loss, "mean_sample_loss": jnp.mean(errors)}


def matched_embeddings(vae, recurrent, sequences, label, rng, num_samples: int):
    """The recurrent net's draw closest to each real sequence, out of num_samples.

    Training the multi-mode stage on a draw whose timing matches the real
    sequence lets the modes learn the sharp shape of each way of smiling,
    instead of hedging over timings they cannot know. At test time the draw is
    the noise-free unroll at the default `multimode.temperature` 0, a random
    one above it (`inference.generate`). sequences: (B, T, 68, 2) -> embeddings (B, T, D).
    """
    target_z, _ = vae.encode(sequences)
    draws = recurrent.sample(target_z[:, 0], label, rng, num_samples, target_z.shape[1])  # (M, B, T, D)
    errors = jnp.sum((draws - target_z) ** 2, axis=(-2, -1))  # (M, B)
    return draws[jnp.argmin(errors, axis=0), jnp.arange(target_z.shape[0])]


def winner_takes_all_weights(errors, relaxation: float):
    """Plain winner-takes-all: the best mode for each real sequence gets
    1 - relaxation, the others share `relaxation`. errors: (B, K) -> (B, K)."""
    num_modes = errors.shape[-1]
    if num_modes == 1:
        return jnp.ones_like(errors)
    winner = jax.nn.one_hot(jnp.argmin(errors, axis=-1), num_modes)
    return winner * (1.0 - relaxation) + (1.0 - winner) * relaxation / (num_modes - 1)


def balanced_assignment_weights(errors, label, num_classes: int, temperature: float, iterations: int = 20):
    """Winner-takes-all under a capacity constraint, solved with Sinkhorn.

    Each real sequence is assigned (softly) to the modes that explain it best,
    subject to every mode taking 1/K of each class's sequences in the batch:
    entropic optimal transport between sequences and modes (as in SwAV's
    balanced clustering). Plain WTA lets one mode win early and the others
    die, leaving styles uncovered; balance makes every mode explain a distinct
    share of the data. `temperature` is relative to the mean error.
    errors: (B, K); label: (B,) -> weights (B, K), each row summing to 1.
    """
    num_modes = errors.shape[-1]
    if num_modes == 1:
        return jnp.ones_like(errors)
    logits = -errors / (temperature * jnp.mean(errors) + 1e-12)
    classes = jax.nn.one_hot(label, num_classes, dtype=bool)  # (B, C)
    # log of the capacity of each (class, mode): n_c / K sequences.
    log_capacity = jnp.log(jnp.maximum(classes.sum(0), 1) / num_modes)  # (C,)
    mode_bias = jnp.zeros((num_classes, num_modes))
    for _ in range(iterations):
        row = logits + mode_bias[label]
        row = row - jax.nn.logsumexp(row, axis=-1, keepdims=True)  # each sequence sums to 1
        # Column sums per class: logsumexp over that class's sequences only.
        per_class = jnp.where(classes[:, :, None], row[:, None, :], -jnp.inf)  # (B, C, K)
        column = jax.nn.logsumexp(per_class, axis=0)  # (C, K)
        mode_bias = mode_bias + log_capacity[:, None] - column
    row = logits + mode_bias[label]
    return jax.nn.softmax(row, axis=-1)


def multimode_losses(generated, target, label, mode_identifier, classifier, config):
    """The multi-mode stage's loss terms.

    generated: (B, K, T, 68, 2); target: (B, T, 68, 2) the real sequence whose
    first frame was the input; label: (B,). `config` holds assignment
    ("balanced", "wta" or "mean"), assignment_temperature, wta_relaxation,
    mode_id_weight, class_weight.
    Returns (loss, metrics).
    """
    batch, num_modes = generated.shape[:2]
    errors = jnp.mean(jnp.sum((generated - target[:, None]) ** 2, axis=-1), axis=(2, 3))
    flat = generated.reshape(batch * num_modes, *generated.shape[2:])
    num_classes = classifier.class_head.out_features
    if config.assignment == "balanced":
        weights = balanced_assignment_weights(
            errors, label, num_classes, config.assignment_temperature
        )
    elif config.assignment == "wta":
        weights = winner_takes_all_weights(errors, config.wta_relaxation)
    else:  # "mean" (`configuration.validate` refuses others), the ablation: every mode regresses to every target
        weights = jnp.full_like(errors, 1.0 / num_modes)
    weights = jax.lax.stop_gradient(weights)  # the assignment is a choice, not a target
    reconstruction = jnp.mean(jnp.sum(weights * errors, axis=-1))

    loss = reconstruction
    winner = jax.nn.one_hot(jnp.argmin(errors, -1), num_modes)
    classes = jax.nn.one_hot(label, num_classes)
    metrics = {
        "reconstruction": reconstruction,
        "best_mode_error": jnp.mean(jnp.min(errors, -1)),
        # Share of (class, mode) pairs whose mode won no sequence of the class.
        "dead_modes": jnp.mean(classes.T @ winner == 0),
    }
    # A term with weight 0 is not computed (both are off by default).
    if config.mode_id_weight and num_modes > 1:
        metrics["mode_id"] = cross_entropy(mode_identifier(flat), jnp.tile(jnp.arange(num_modes), batch))
        loss = loss + config.mode_id_weight * metrics["mode_id"]
    if config.class_weight:
        metrics["class_loss"] = cross_entropy(classifier(flat)["class_logits"], jnp.repeat(label, num_modes))
        loss = loss + config.class_weight * metrics["class_loss"]
    return loss, dict(metrics, loss=loss)


# ---------------------------------------------------------------------------
# The translator stage: training pairs and the one-gradient GAN loss

# The parts a smile moves, and the reach (pixels at 64x64, scaled with the
# image) of their extra weight in the L1 loss.
MOVING_PARTS = (landmarks.RIGHT_EYE, landmarks.LEFT_EYE, landmarks.OUTER_LIPS, landmarks.INNER_LIPS)
PART_L1_SIGMA = 3.0


class TranslatorStage(nnx.Module):
    """What the translator stage trains: the generator and its discriminator."""

    def __init__(self, config, *, rngs: nnx.Rngs):
        # What both compute in (configuration.TRANSLATOR_DTYPES); runs saved before the option: float32.
        dtype = jnp.dtype(config.translator.get("dtype", "float32"))
        self.generator = Translator(
            config.translator.features, config.translator.num_levels, dtype, rngs=rngs
        )
        self.discriminator = PatchDiscriminator(config.translator.disc_features, dtype=dtype, rngs=rngs)


def target_frames(rng, batch: int, num_frames: int, frames_per_clip: int) -> jax.Array:
    """Frames 1..T-1 drawn without replacement per clip: int (B, frames_per_clip)."""
    keys = jax.random.split(rng, batch)
    return jax.vmap(lambda key: 1 + jax.random.permutation(key, num_frames - 1)[:frames_per_clip])(keys)


def sample_pairs(frames, points, rng, frames_per_clip: int):
    """Training pairs from clips whose frame 0 is neutral.

    frames: (B, T, H, W, 3) in [-1, 1]; points: (B, T, 68, 2) pixels ->
    (source_image, source_points, target_points, target_image) with a leading
    axis B * frames_per_clip; targets are frames 1..T-1 drawn without
    replacement within a clip.
    """
    batch, num_frames = points.shape[:2]
    t = target_frames(rng, batch, num_frames, frames_per_clip)  # (B, F)
    clip = jnp.arange(batch)[:, None]

    def flat(x):
        return x.reshape(-1, *x.shape[2:])

    def repeat_first(x):
        return flat(jnp.repeat(x[:, :1], frames_per_clip, axis=1))

    return repeat_first(frames), repeat_first(points), flat(points[clip, t]), flat(frames[clip, t])


def psnr(image, target) -> jax.Array:
    """Peak signal-to-noise ratio in dB of images in [-1, 1] (peak-to-peak 2),
    per image: (B, H, W, C) x2 -> (B,)."""
    mse = jnp.mean((image - target) ** 2, axis=(1, 2, 3))
    return 10.0 * jnp.log10(4.0 / jnp.maximum(mse, 1e-10))


def translator_losses(
    stage: TranslatorStage, source_image, source_points, target_points, target_image, config
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Generator and discriminator losses as ONE scalar, for one optimiser.

    loss = generator_loss(G params; D held fixed) + discriminator_loss(D params; fake held fixed)

    - the discriminator loss sees `stop_gradient(fake)`, so it sends no
      gradient into the generator;
    - the generator loss runs through a copy of the discriminator whose
      parameters are wrapped in `stop_gradient`, so it sends no gradient into
      the discriminator (and the generator does not learn to make D worse).
    Hence d(loss)/d(G params) = d(generator_loss)/d(G params) and
    d(loss)/d(D params) = d(discriminator_loss)/d(D params): one
    `value_and_grad` gives the simultaneous GAN updates.

    Adversarial loss: the non-saturating logistic loss of pix2pix. Its
    generator gradient does not vanish while D rejects the fakes confidently
    (early on), and its logits read as probabilities (D(real), D(fake)) for
    monitoring. Feature matching (pix2pixHD): L1 between D's hidden features
    of fake and real frames, which steadies the generator's signal.

    source_image, target_image: (B, H, W, 3) in [-1, 1]; source_points,
    target_points: (B, 68, 2) pixels. `config` holds l1_weight,
    part_l1_weight, adversarial_weight, feature_matching_weight.
    """
    fake = stage.generator(source_image, source_points, target_points)

    # Real and (held) fake frames through the discriminator as one batch.
    batch = target_image.shape[0]
    logits, features = stage.discriminator(
        jnp.concatenate([target_image, jax.lax.stop_gradient(fake)]),
        jnp.concatenate([source_image, source_image]),
        jnp.concatenate([target_points, target_points]),
    )
    real_logits, fake_logits_d = logits[:batch], logits[batch:]
    real_features = [f[:batch] for f in features]
    discriminator_loss = jnp.mean(jax.nn.softplus(-real_logits)) + jnp.mean(
        jax.nn.softplus(fake_logits_d)
    )

    graphdef, disc_state = nnx.split(stage.discriminator)
    frozen_discriminator = nnx.merge(graphdef, jax.lax.stop_gradient(disc_state))
    fake_logits_g, fake_features = frozen_discriminator(fake, source_image, target_points)
    adversarial = jnp.mean(jax.nn.softplus(-fake_logits_g))
    feature_matching = jnp.mean(
        jnp.stack(
            [
                jnp.mean(jnp.abs(f - jax.lax.stop_gradient(r)))
                for f, r in zip(fake_features, real_features)
            ]
        )
    )
    # L1 with the face's moving parts (eyes, lips) weighted up: a smile moves
    # a few hundred pixels of a frame, and a plain mean lets a generator that
    # barely moves them look good.
    emphasis = jnp.max(
        landmark_heatmaps(target_points, target_image.shape[1], PART_L1_SIGMA * target_image.shape[1] / 64, MOVING_PARTS),
        axis=-1, keepdims=True,
    )
    weight = 1.0 + config.part_l1_weight * emphasis
    l1 = jnp.mean(jnp.abs(fake - target_image) * weight) / jnp.mean(weight)
    generator_loss = (
        config.l1_weight * l1
        + config.adversarial_weight * adversarial
        + config.feature_matching_weight * feature_matching
    )
    loss = generator_loss + discriminator_loss
    metrics = {
        "loss": loss,
        "l1": l1,
        "generator_adversarial": adversarial,
        "feature_matching": feature_matching,
        "generator_loss": generator_loss,
        "discriminator_loss": discriminator_loss,
        "d_real": jnp.mean(jax.nn.sigmoid(real_logits)),
        "d_fake": jnp.mean(jax.nn.sigmoid(fake_logits_d)),
        "psnr": jnp.mean(psnr(fake, target_image)),
    }
    return loss, metrics


def _to_unit(images):
    return images.astype(jnp.float32) / 127.5 - 1.0


def synthetic_pairs(bank: face_bank.FaceBank, sequences, rng, frames_per_clip: int):
    """Training pairs from landmark clips and the face bank.

    sequences: (B, T, 68, 2) in pixels of the bank's images. Each clip gets a
    random face; its motion (frame t minus frame 0, scaled by the ratio of
    inter-ocular distances) moves the face's points, and the warp renderer
    draws the target frames. -> the arguments of `translator_losses`, each
    with a leading axis B * frames_per_clip.
    """
    batch, num_frames = sequences.shape[:2]
    face_rng, time_rng = jax.random.split(rng)
    index = jax.random.randint(face_rng, (batch,), 0, bank.images.shape[0])
    images, points = bank.images[index], bank.points[index]  # (B, S, S, 3), (B, 68, 2)
    scale = landmarks.inter_ocular_distance(points) / landmarks.inter_ocular_distance(sequences[:, 0])
    moved = points[:, None] + (sequences - sequences[:, :1]) * scale[:, None, None, None]  # (B, T, 68, 2)
    t = target_frames(time_rng, batch, num_frames, frames_per_clip)  # (B, F)
    targets = moved[jnp.arange(batch)[:, None], t]  # (B, F, 68, 2)

    def repeat(x):
        return jnp.repeat(x, frames_per_clip, axis=0)

    flat = targets.reshape(-1, *targets.shape[2:])
    palettes = jax.tree.map(repeat, bank.palette(index))
    frames = warp.warp_images(repeat(images.astype(jnp.float32)), repeat(points), flat, palettes=palettes)  # [0, 255]
    return repeat(_to_unit(images)), repeat(points), flat, frames / 127.5 - 1.0


# ---------------------------------------------------------------------------
# The stages

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
            motion_only=model_option(config, "multimode", "motion_only"),
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


def _vae_loss(model, frozen, batch, rng, config):
    frames = batch["landmarks"].reshape(-1, *batch["landmarks"].shape[-2:])
    return vae_loss(model, frames, rng, config.vae.beta)


def _classifier_loss(model, frozen, batch, rng, config):
    return classification_loss(model, batch["landmarks"], batch["label"], batch["style"])


def _judge_loss(model, frozen, batch, rng, config):
    # Extra tracker-like noise on the inputs: without it the judge memorises
    # the training clips (train 0.99, validation 0.77 on smile_synth).
    sequences = batch["landmarks"] + config.judge.input_noise * jax.random.normal(rng, batch["landmarks"].shape)
    return classification_loss(model, sequences, batch["label"], batch["style"], log_style_loss=False)


def _recurrent_loss(model, frozen, batch, rng, config):
    target_z, _ = frozen["vae"].encode(batch["landmarks"])
    return recurrent_loss(
        model, jax.lax.stop_gradient(target_z), batch["label"], rng, config.recurrent.num_samples,
        config.recurrent.get("face_noise", 0.0),
    )


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


def _translator_loss(model, frozen, batch, rng, config):
    size = config.translator.image_size
    sequences = landmarks.denormalize(batch["landmarks"], size)
    pair_rng, loss_rng = jax.random.split(rng)
    if "frames" in batch:
        pairs = sample_pairs(
            _to_unit(batch["frames"]), sequences, pair_rng, config.translator.frames_per_clip
        )
    else:
        pairs = synthetic_pairs(frozen["faces"], sequences, pair_rng, config.translator.frames_per_clip)
    return translator_losses(model, *pairs, config.translator)


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
            c.vae.latent_dim, info.num_classes, c.recurrent.noise_dim, c.recurrent.hidden,
            relative_input=model_option(c, "recurrent", "relative_input"), rngs=rngs
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
        _translator_loss,
        extras=face_bank.face_bank_for,
    ),
}
