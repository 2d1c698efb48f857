"""The sequence classifier (class, and style where the data has styles).

Used frozen by the multi-mode losses (class consistency); the evaluation
reports its accuracy on real held-out clips (`classifier_test_accuracy`), but
scores generated sequences with the judge (`models/judge.py`), which no stage
trains against. The same encoder, with K outputs, is the multi-mode stage's
mode identifier.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from cmm_jax.landmarks import NUM_POINTS

# Displacements from frame 0 are small in [-1, 1] units; scale them to O(1).
DISPLACEMENT_SCALE = 10.0


class SequenceEncoder(nnx.Module):
    """Landmark sequence -> one feature vector, by temporal convolutions.

    It reads each frame's displacement from the first (neutral) frame, so it
    judges the motion, not the identity.
    """

    def __init__(self, hidden: int, features: int, *, rngs: nnx.Rngs):
        self.embed = nnx.Linear(NUM_POINTS * 2, hidden, rngs=rngs)
        self.conv1 = nnx.Conv(hidden, hidden, kernel_size=(5,), rngs=rngs)
        self.conv2 = nnx.Conv(hidden, hidden, kernel_size=(5,), rngs=rngs)
        self.project = nnx.Linear(2 * hidden, features, rngs=rngs)

    def __call__(self, sequences):
        """sequences: (B, T, 68, 2) in [-1, 1] -> features (B, F)."""
        batch, num_frames = sequences.shape[:2]
        motion = (sequences - sequences[:, :1]) * DISPLACEMENT_SCALE
        x = jax.nn.gelu(self.embed(motion.reshape(batch, num_frames, -1)))
        x = x + jax.nn.gelu(self.conv1(x))
        x = x + jax.nn.gelu(self.conv2(x))
        pooled = jnp.concatenate([x.mean(axis=1), x.max(axis=1)], axis=-1)
        return jax.nn.gelu(self.project(pooled))


class SequenceClassifier(nnx.Module):
    def __init__(
        self,
        num_classes: int,
        num_styles: int,
        hidden: int,
        features: int,
        *,
        rngs: nnx.Rngs,
    ):
        self.encoder = SequenceEncoder(hidden, features, rngs=rngs)
        self.class_head = nnx.Linear(features, num_classes, rngs=rngs)
        # Datasets without style labels (UvA-NEMO, MUG) get no style head.
        self.style_head = (
            nnx.Linear(features, num_styles, rngs=rngs) if num_styles else None
        )

    def __call__(self, sequences):
        """sequences: (B, T, 68, 2) -> dict of features, class_logits[, style_logits]."""
        features = self.encoder(sequences)
        out = {"features": features, "class_logits": self.class_head(features)}
        if self.style_head is not None:
            out["style_logits"] = self.style_head(features)
        return out
