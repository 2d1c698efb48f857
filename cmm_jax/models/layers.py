"""Building blocks shared by the networks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


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
