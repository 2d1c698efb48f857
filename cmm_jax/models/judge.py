"""The judge: a sequence classifier that scores generated sequences and is
never part of any loss.

The multi-mode stage trains against the loss classifier (`classifier.py`, a
temporal CNN), so that network's opinion of generated sequences is not
evidence: the generator was optimised to please it. The judge has a different
architecture (a bidirectional GRU over inter-ocular-normalised displacements),
its own seed and its own stage, and no stage `requires` it
(tests/test_models.py checks). `evaluate` uses it for class accuracy, style
assignment, coverage and the Fréchet-distance features.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from cmm_jax.landmarks import LEFT_EYE_OUTER, NUM_POINTS, RIGHT_EYE_OUTER

# Smile displacements are ~0.03-0.3 inter-ocular distances: scale them to O(1).
DISPLACEMENT_SCALE = 10.0


def _gru_over_time(cell: nnx.GRUCell, inputs, hidden: int, reverse: bool):
    """inputs: (B, T, F) -> (last state (B, H), all states (B, T, H))."""
    carry = jnp.zeros((inputs.shape[0], hidden), inputs.dtype)
    _, states = jax.lax.scan(lambda c, x: cell(c, x), carry, jnp.swapaxes(inputs, 0, 1), reverse=reverse)
    states = jnp.swapaxes(states, 0, 1)
    return (states[:, 0] if reverse else states[:, -1]), states


class SequenceJudge(nnx.Module):
    def __init__(self, num_classes: int, num_styles: int, hidden: int, features: int, *, rngs: nnx.Rngs):
        self.hidden = hidden
        self.embed = nnx.Linear(NUM_POINTS * 2, hidden, rngs=rngs)
        self.forward_cell = nnx.GRUCell(hidden, hidden, rngs=rngs)
        self.backward_cell = nnx.GRUCell(hidden, hidden, rngs=rngs)
        self.project = nnx.Linear(3 * hidden, features, rngs=rngs)
        self.class_head = nnx.Linear(features, num_classes, rngs=rngs)
        self.style_head = nnx.Linear(features, num_styles, rngs=rngs) if num_styles else None

    def __call__(self, sequences):
        """sequences: (B, T, 68, 2) in [-1, 1] -> dict of features (B, F),
        class_logits (B, C)[, style_logits (B, S)]."""
        batch, num_frames = sequences.shape[:2]
        neutral = sequences[:, 0]
        iod = jnp.linalg.norm(neutral[:, LEFT_EYE_OUTER] - neutral[:, RIGHT_EYE_OUTER], axis=-1)
        motion = (sequences - sequences[:, :1]) / iod[:, None, None, None] * DISPLACEMENT_SCALE
        x = jnp.tanh(self.embed(motion.reshape(batch, num_frames, -1)))
        last_forward, states = _gru_over_time(self.forward_cell, x, self.hidden, reverse=False)
        last_backward, _ = _gru_over_time(self.backward_cell, x, self.hidden, reverse=True)
        pooled = jnp.concatenate([last_forward, last_backward, states.max(axis=1)], -1)
        features = jnp.tanh(self.project(pooled))
        out = {"features": features, "class_logits": self.class_head(features)}
        if self.style_head is not None:
            out["style_logits"] = self.style_head(features)
        return out
