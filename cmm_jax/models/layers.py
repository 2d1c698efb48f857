"""Building blocks shared by the networks."""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from cmm_jax import landmarks

# One heatmap channel per facial part: 68 channels would mostly be empty and
# tell the network nothing the parts do not.
PARTS = (
    landmarks.JAW,
    landmarks.RIGHT_BROW,
    landmarks.LEFT_BROW,
    landmarks.NOSE_BRIDGE,
    landmarks.NOSE_BOTTOM,
    landmarks.RIGHT_EYE,
    landmarks.LEFT_EYE,
    landmarks.OUTER_LIPS,
    landmarks.INNER_LIPS,
)
NUM_PARTS = len(PARTS)
LEAK = 0.2  # slope of the image networks' leaky ReLUs


class MLP(nnx.Module):
    """Linear layers with GELU between them (none after the last)."""

    def __init__(self, sizes: tuple[int, ...], *, rngs: nnx.Rngs):
        self.layers = nnx.List(
            [nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])]
        )

    def __call__(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = jax.nn.gelu(x)
        return x


class LSTM(nnx.Module):
    """An LSTM over the time axis, unrolled with `jax.lax.scan`.

    The state at t=0 is given (e.g. derived from the neutral face), so the same
    module serves every recurrent network here.
    """

    def __init__(self, in_features: int, hidden: int, *, rngs: nnx.Rngs):
        self.hidden = hidden
        self.cell = nnx.OptimizedLSTMCell(in_features, hidden, rngs=rngs)

    def __call__(self, carry, inputs):
        """carry: (c, h), each (B, H); inputs: (B, T, F) -> outputs (B, T, H)."""

        def step(carry, x):
            return self.cell(carry, x)

        _, outputs = jax.lax.scan(step, carry, jnp.swapaxes(inputs, 0, 1))
        return jnp.swapaxes(outputs, 0, 1)

    def step(self, carry, x):
        """One time step: carry (c, h), x (B, F) -> (carry, h)."""
        return self.cell(carry, x)


def landmark_heatmaps(
    points: jax.Array,
    size: int,
    sigma: float = 1.5,
    groups: Sequence[Sequence[int]] = PARTS,
) -> jax.Array:
    """Gaussian heatmaps, one channel per group of points (max over its points).

    points: (..., 68, 2) pixel coordinates -> (..., size, size, len(groups)),
    each value in [0, 1], 1 at a point.
    """
    grid = jnp.arange(size, dtype=points.dtype)
    # A 2D Gaussian is separable: one exp per point and row / column.
    along_x = jnp.exp(-((grid - points[..., :, 0:1]) ** 2) / (2 * sigma**2))  # (..., 68, W)
    along_y = jnp.exp(-((grid - points[..., :, 1:2]) ** 2) / (2 * sigma**2))  # (..., 68, H)
    channels = []
    for group in groups:
        index = jnp.asarray(group)
        blobs = along_y[..., index, :, None] * along_x[..., index, None, :]  # (..., P, H, W)
        channels.append(blobs.max(axis=-3))
    return jnp.stack(channels, axis=-1)


def group_norm(channels: int, rngs: nnx.Rngs, dtype=None) -> nnx.GroupNorm:
    # Not BatchNorm: its running statistics would not fit the pure train step.
    # dtype: of the output (its statistics are taken in float32 either way).
    return nnx.GroupNorm(channels, num_groups=math.gcd(8, channels), dtype=dtype, rngs=rngs)
