"""Stage 1: a variational auto-encoder of single-frame landmarks.

It learns the embedding space in which the conditional recurrent network
moves: a face's 68 points (136 numbers) <-> a `latent_dim` vector.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from cmm_jax.landmarks import NUM_POINTS
from cmm_jax.models.layers import MLP

FLAT = NUM_POINTS * 2


class LandmarkVAE(nnx.Module):
    def __init__(self, latent_dim: int, hidden: int, *, rngs: nnx.Rngs):
        self.latent_dim = latent_dim
        self.encoder = MLP((FLAT, hidden, hidden, 2 * latent_dim), rngs=rngs)
        self.decoder = MLP((latent_dim, hidden, hidden, FLAT), rngs=rngs)

    def encode(self, points):
        """points: (..., 68, 2) in [-1, 1] -> mean, log_var: (..., latent_dim)."""
        flat = points.reshape(*points.shape[:-2], FLAT)
        mean, log_var = jnp.split(self.encoder(flat), 2, axis=-1)
        return mean, log_var

    def decode(self, z):
        """z: (..., latent_dim) -> points (..., 68, 2)."""
        return self.decoder(z).reshape(*z.shape[:-1], NUM_POINTS, 2)

    def __call__(self, points, rng):
        """Reconstruction through a sampled code: -> (recon, mean, log_var)."""
        mean, log_var = self.encode(points)
        z = mean + jnp.exp(0.5 * log_var) * jax.random.normal(rng, mean.shape)
        return self.decode(z), mean, log_var
