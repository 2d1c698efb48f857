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
from cmm_jax.models.classifier import SequenceEncoder
from cmm_jax.models.layers import LSTM

FLAT = NUM_POINTS * 2
# Decoder outputs are O(1); smile displacements are O(0.1) in [-1, 1] units.
DISPLACEMENT_SCALE = 0.1


class ModeDecoder(nnx.Module):
    """One mode: embedding sequence + neutral face -> landmark displacements."""

    def __init__(
        self, latent_dim: int, num_classes: int, hidden: int, *, rngs: nnx.Rngs, variation_dim: int = 0,
        motion_only: bool = False,
    ):
        self.num_classes = num_classes
        # motion_only: each step reads the embedding's change from z_0 only, so
        # the face reaches the decoder through its landmarks alone.
        self.motion_only = motion_only
        context_features = FLAT + num_classes + variation_dim
        # What stays constant over time (face, class) is projected once and
        # added to every step's input, not concatenated to it T times.
        self.init_state = nnx.Linear(context_features, 2 * hidden, rngs=rngs)
        self.context_input = nnx.Linear(context_features, hidden, rngs=rngs)
        self.frame_input = nnx.Linear((1 if motion_only else 2) * latent_dim, hidden, rngs=rngs)
        self.lstm = LSTM(hidden, hidden, rngs=rngs)
        self.to_displacement = nnx.Linear(hidden, FLAT, rngs=rngs)

    def __call__(self, embeddings, neutral, label, variation=None):
        """embeddings: (B, T, D); neutral: (B, 68, 2); label: (B,); variation:
        (B, V) or None when V = 0 -> (B, T, 68, 2)."""
        batch, num_frames, _ = embeddings.shape
        parts = [neutral.reshape(batch, FLAT), jax.nn.one_hot(label, self.num_classes)]
        context = jnp.concatenate(parts + ([] if variation is None else [variation]), -1)
        c, h = jnp.split(self.init_state(context), 2, -1)
        motion = embeddings[:, 1:] - embeddings[:, :1]
        if not self.motion_only:
            motion = jnp.concatenate([embeddings[:, 1:], motion], -1)
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
        motion_only: bool = False,
    ):
        self.num_modes = num_modes
        # A per-sequence latent (a conditional VAE's): what varies between
        # smiles of one mode (intensity, timing), inferred from the real
        # sequence in training and drawn from N(0, I) at generation.
        self.variation_dim = variation_dim

        @nnx.split_rngs(splits=num_modes)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def make_decoders(rngs):
            return ModeDecoder(latent_dim, num_classes, hidden, rngs=rngs, variation_dim=variation_dim,
                               motion_only=motion_only)

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
