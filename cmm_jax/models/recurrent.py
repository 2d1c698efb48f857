"""Stage 2: the conditional recurrent network.

From the embedding of ONE neutral face and a class it unrolls an embedding
sequence z_0 .. z_{T-1} (z_0 is the input's own embedding). Each step sees the
previous embedding, the class and a noise vector; the LSTM state starts from
the neutral embedding. With relative_input, each step sees the previous
embedding's change from z_0 instead: the face enters through the initial
state only, and every step's input is the motion so far.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from cmm_jax.models.classifier import SequenceEncoder
from cmm_jax.models.layers import LSTM


class ConditionalRecurrent(nnx.Module):
    def __init__(
        self,
        latent_dim: int,
        num_classes: int,
        noise_dim: int,
        hidden: int,
        *,
        relative_input: bool = False,
        rngs: nnx.Rngs,
    ):
        self.num_classes = num_classes
        self.relative_input = relative_input
        self.noise_dim = noise_dim
        self.init_state = nnx.Linear(latent_dim, 2 * hidden, rngs=rngs)
        self.lstm = LSTM(latent_dim + num_classes + noise_dim, hidden, rngs=rngs)
        self.to_delta = nnx.Linear(hidden, latent_dim, rngs=rngs)

    def __call__(self, z0, label, noise, face_offset=None):
        """z0: (B, D); label: (B,) int; noise: (B, T-1, noise_dim) -> (B, T, D).

        face_offset (B, D): the net reads the face as z0 + face_offset (in its
        initial state, and, unless `relative_input`, in each step's embedding;
        with it each step reads z_t - z0, where no offset enters) while the
        sequence itself still starts at z0 and moves by the steps' outputs
        (training with `recurrent.face_noise`)."""
        offset = jnp.zeros_like(z0) if face_offset is None else face_offset
        condition = jax.nn.one_hot(label, self.num_classes)

        def step(carry, noise_t):
            carry = self.step(carry, condition, noise_t, z0, offset)
            return carry, carry[1]

        _, zs = jax.lax.scan(step, self.initial_carry(z0, offset), jnp.swapaxes(noise, 0, 1))
        return jnp.concatenate([z0[:, None], jnp.swapaxes(zs, 0, 1)], axis=1)

    def initial_carry(self, z0, offset):
        """The state the unroll starts from: ((c, h), z0), the LSTM's state read
        from the face as the net sees it (z0 + offset (B, D))."""
        c, h = jnp.split(self.init_state(z0 + offset), 2, axis=-1)
        return (jnp.tanh(c), jnp.tanh(h)), z0

    def step(self, carry, condition, noise_t, z0, offset):
        """One time step: carry ((c, h), z_prev) -> the next, whose z is the
        next embedding. condition (B, C) one-hot; noise_t (B, noise_dim); the
        step reads z_prev + offset, or with relative_input z_prev - z0."""
        lstm_carry, z_prev = carry
        seen = z_prev - z0 if self.relative_input else z_prev + offset
        lstm_carry, out = self.lstm.step(lstm_carry, jnp.concatenate([seen, condition, noise_t], axis=-1))
        # Residual steps: the sequence starts at the face and moves from it.
        return lstm_carry, z_prev + self.to_delta(out)


    def sample(self, z0, label, rng, num_draws: int, num_frames: int, shared: bool = False,
               temperature: float = 1.0, face_offset=None):
        """num_draws independent sequences per input, each with its own noise
        (shared: draw d has the same noise for every input of the batch).
        temperature scales the noise: 1 samples the learnt law, 0 gives its
        noise-free unroll (the truncation trick of GANs and flows).

        z0: (B, D); label: (B,) -> (num_draws, B, T, D). face_offset: as in __call__.
        """
        if temperature == 0:  # every draw is the one noise-free unroll: run it once
            unroll = self(z0, label, jnp.zeros((z0.shape[0], num_frames - 1, self.noise_dim)), face_offset)
            return jnp.broadcast_to(unroll, (num_draws,) + unroll.shape)
        shape = (num_draws, 1 if shared else z0.shape[0], num_frames - 1, self.noise_dim)
        noise = temperature * jax.random.normal(rng, shape)
        noise = jnp.broadcast_to(noise, (num_draws, z0.shape[0]) + shape[2:])
        return jax.vmap(lambda n: self(z0, label, n, face_offset))(noise)


class NoisePosterior(nnx.Module):
    """q(latent | real sequence) as a diagonal Gaussian of any shape (a
    conditional VAE's encoder): the recurrent net's noise that would unroll
    into this sequence's timing, or the mode decoders' variation latent.
    Trained with a KL term towards the N(0, I) prior that generation draws
    from, so what the decoders see in training stays close to what they see
    at test time."""

    def __init__(self, shape: tuple[int, ...], hidden: int, features: int, *, rngs: nnx.Rngs):
        self.shape = tuple(shape)
        self.encoder = SequenceEncoder(hidden, features, rngs=rngs)
        self.to_gaussian = nnx.Linear(features, 2 * int(np.prod(shape)), rngs=rngs)

    def __call__(self, sequences):
        """sequences: (B, T, 68, 2) -> mean, log_var: (B, *shape)."""
        out = self.to_gaussian(self.encoder(sequences)).reshape(sequences.shape[0], 2, *self.shape)
        return out[:, 0], jnp.clip(out[:, 1], -10.0, 4.0)
