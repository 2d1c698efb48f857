"""Stage 3: the multi-mode recurrent landmark generator.

K mode-specific recurrent decoders turn ONE embedding sequence (from the
conditional recurrent network) into K landmark sequences. The decoders'
parameters are stacked on a leading mode axis and run with `nnx.vmap`, so K
costs one batched computation, not a Python loop.

Each decoder outputs displacements from the input's neutral landmarks, and
frame 0 is the input itself: the identity is carried through by construction.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from cmm_jax.landmarks import NUM_POINTS
from cmm_jax.models.classifier import SequenceEncoder, cross_entropy
from cmm_jax.models.layers import LSTM

FLAT = NUM_POINTS * 2
# Decoder outputs are O(1); smile displacements are O(0.1) in [-1, 1] units.
DISPLACEMENT_SCALE = 0.1


class ModeDecoder(nnx.Module):
    """One mode: embedding sequence + neutral face -> landmark displacements."""

    def __init__(
        self, latent_dim: int, num_classes: int, hidden: int, *, rngs: nnx.Rngs, variation_dim: int = 0
    ):
        self.num_classes = num_classes
        context_features = FLAT + num_classes + variation_dim
        # What stays constant over time (face, class) is projected once and
        # added to every step's input, not concatenated to it T times.
        self.init_state = nnx.Linear(context_features, 2 * hidden, rngs=rngs)
        self.context_input = nnx.Linear(context_features, hidden, rngs=rngs)
        self.frame_input = nnx.Linear(2 * latent_dim, hidden, rngs=rngs)
        self.lstm = LSTM(hidden, hidden, rngs=rngs)
        self.to_displacement = nnx.Linear(hidden, FLAT, rngs=rngs)

    def __call__(self, embeddings, neutral, label, variation=None):
        """embeddings: (B, T, D); neutral: (B, 68, 2); label: (B,); variation:
        (B, V) or None when V = 0 -> (B, T, 68, 2)."""
        batch, num_frames, _ = embeddings.shape
        parts = [neutral.reshape(batch, FLAT), jax.nn.one_hot(label, self.num_classes)]
        context = jnp.concatenate(parts + ([] if variation is None else [variation]), -1)
        c, h = jnp.split(self.init_state(context), 2, -1)
        motion = jnp.concatenate([embeddings[:, 1:], embeddings[:, 1:] - embeddings[:, :1]], -1)
        inputs = jax.nn.gelu(self.frame_input(motion) + self.context_input(context)[:, None])
        hidden = self.lstm((jnp.tanh(c), jnp.tanh(h)), inputs)
        displacement = DISPLACEMENT_SCALE * self.to_displacement(hidden)
        moving = neutral[:, None] + displacement.reshape(batch, num_frames - 1, NUM_POINTS, 2)
        return jnp.concatenate([neutral[:, None], moving], axis=1)


class MultiModeGenerator(nnx.Module):
    def __init__(
        self,
        num_modes: int,
        latent_dim: int,
        num_classes: int,
        hidden: int,
        *,
        rngs: nnx.Rngs,
        variation_dim: int = 0,
    ):
        self.num_modes = num_modes
        # A per-sequence latent (a conditional VAE's): what varies between
        # smiles of one mode (intensity, timing), inferred from the real
        # sequence in training and drawn from N(0, I) at generation.
        self.variation_dim = variation_dim

        @nnx.split_rngs(splits=num_modes)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def make_decoders(rngs):
            return ModeDecoder(latent_dim, num_classes, hidden, rngs=rngs, variation_dim=variation_dim)

        self.decoders = make_decoders(rngs)

    def __call__(self, embeddings, neutral, label, variation=None):
        """embeddings: (B, T, D) shared by the modes, or (B, K, T, D) one per
        mode; neutral: (B, 68, 2); label: (B,); variation: None, (B, V) shared
        or (B, K, V) one per mode -> (B, K, T, 68, 2)."""
        embedding_axis = 1 if embeddings.ndim == 4 else None
        variation_axis = 1 if variation is not None and variation.ndim == 3 else None

        @nnx.vmap(in_axes=(0, embedding_axis, None, None, variation_axis), out_axes=1)
        def run(decoder, embeddings, neutral, label, variation):
            return decoder(embeddings, neutral, label, variation)

        return run(self.decoders, embeddings, neutral, label, variation)


class ModeIdentifier(nnx.Module):
    """Tells which of the K modes made a sequence (the MAD-GAN diversity term)."""

    def __init__(self, num_modes: int, hidden: int, features: int, *, rngs: nnx.Rngs):
        self.encoder = SequenceEncoder(hidden, features, rngs=rngs)
        self.head = nnx.Linear(features, num_modes, rngs=rngs)

    def __call__(self, sequences):
        """sequences: (B, T, 68, 2) -> mode logits (B, K)."""
        return self.head(self.encoder(sequences))


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
    class_logits = classifier(flat)["class_logits"]
    num_classes = class_logits.shape[-1]
    if config.assignment == "balanced":
        weights = balanced_assignment_weights(
            errors, label, num_classes, config.assignment_temperature
        )
    elif config.assignment == "wta":
        weights = winner_takes_all_weights(errors, config.wta_relaxation)
    else:  # "mean", the ablation: every mode regresses to every target
        weights = jnp.full_like(errors, 1.0 / num_modes)
    weights = jax.lax.stop_gradient(weights)  # the assignment is a choice, not a target
    reconstruction = jnp.mean(jnp.sum(weights * errors, axis=-1))

    mode_labels = jnp.tile(jnp.arange(num_modes), batch)
    mode_id = cross_entropy(mode_identifier(flat), mode_labels) if num_modes > 1 else 0.0
    class_loss = cross_entropy(class_logits, jnp.repeat(label, num_modes))

    loss = reconstruction + config.mode_id_weight * mode_id + config.class_weight * class_loss
    winner = jax.nn.one_hot(jnp.argmin(errors, -1), num_modes)
    classes = jax.nn.one_hot(label, num_classes)
    metrics = {
        "loss": loss,
        "reconstruction": reconstruction,
        "best_mode_error": jnp.mean(jnp.min(errors, -1)),
        "mode_id": mode_id,
        "class_loss": class_loss,
        # Share of (class, mode) pairs whose mode won no sequence of the class.
        "dead_modes": jnp.mean(classes.T @ winner == 0),
    }
    return loss, metrics
