"""The trained landmark pipeline at work: landmark sequences for inputs, and frames.

What the multi-mode stage's loss, `evaluate`, `report` and `sample` share:
`generate` runs VAE -> conditional recurrent net -> multi-mode generator on a
batch; `generate_for_inputs` runs it over any number of inputs and every
class, seeded by the config; `ResidualBank` holds what the K prototypes do
not say (how real smiles of a mode scatter around it), drawn back with
`multimode.spread`; `render_warp` and `render_translator` turn a crop and
landmark sequences into frames.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from cmm_jax import landmarks, metrics, warp
from cmm_jax.errors import UserError


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


@functools.partial(nnx.jit, static_argnames=("num_frames", "per_mode_timing", "shared_noise", "temperature"))
def generate_batch(vae, recurrent, generator, neutral, label, rng, *, num_frames, per_mode_timing, shared_noise=False,
              temperature=1.0):
    """`generate` compiled, its options static."""
    return generate(vae, recurrent, generator, neutral, label, rng, num_frames, per_mode_timing, shared_noise,
                    temperature)


def prototypes_for_inputs(models, neutral, num_classes, num_frames, config, seed, batch_size=256):
    """The networks' K sequences for every input and class -> (N, C, K, T, 68, 2)."""
    n = len(neutral)
    inputs = np.repeat(neutral, num_classes, axis=0)
    labels = np.tile(np.arange(num_classes, dtype=np.int32), n)
    fn = functools.partial(generate_batch, num_frames=num_frames, per_mode_timing=config.multimode.per_mode_timing,
                           temperature=float(config.multimode.get("temperature", 1.0)))
    networks = (models["vae"], models["recurrent"], models["multimode"].generator)
    rng = jax.random.PRNGKey(seed)
    outputs = []
    for i, start in enumerate(range(0, len(inputs), batch_size)):
        chunk = slice(start, start + batch_size)
        outputs.append(
            jax.device_get(fn(*networks, inputs[chunk], labels[chunk], jax.random.fold_in(rng, i)))
        )
    generated = np.concatenate(outputs)
    return generated.reshape(n, num_classes, *generated.shape[1:])


def generate_for_inputs(models, neutral, num_classes, num_frames, config, seed=None):
    """Every input with every class -> (N, C, K, T, 68, 2).

    With config.multimode.spread > 0 each mode's sequence is one draw of its
    mode's smiles (`ResidualBank`, models["residuals"]). seed (default
    config.seed) seeds the networks' noise and the draws."""
    seed = config.seed if seed is None else seed
    generated = prototypes_for_inputs(models, neutral, num_classes, num_frames, config, seed)
    spread = float(config.multimode.get("spread", 0.0))
    if spread > 0:
        if models.get("residuals") is None:
            raise UserError(f"multimode.spread={spread} needs the run's residual bank (residuals.npz), "
                            "which the multimode stage writes; retrain it or set multimode.spread=0")
        generated = models["residuals"].draw(generated, spread, np.random.default_rng([seed, 1]))
    return generated


@dataclasses.dataclass(frozen=True)
class ResidualBank:
    """How the real smiles of each (class, mode) scatter around the mode's prototype.

    residuals: (C, K, M, T-1, 68, 2) float16, displacements in inter-ocular
    distances (`metrics.displacements`): a training clip's motion minus the
    motion its nearest mode generates for that clip's own neutral face;
    counts: (C, K) how many of the M slots of each cell hold one.

    `draw` adds one of its cell's residuals to every generated sequence, so
    the K outputs are a stratified sample of the smiles the training data
    shows around the K prototypes (spread 1), the prototypes themselves
    (spread 0), or between. The residual is the same for every face at a
    seed: only the prototypes depend on the face.
    """

    residuals: np.ndarray
    counts: np.ndarray

    @classmethod
    def fit(cls, prototypes: np.ndarray, reference: np.ndarray, label: np.ndarray, size: int,
            rng: np.random.Generator) -> "ResidualBank":
        """prototypes: (N, C, K, T, 68, 2) generated for the N training clips'
        neutral faces; reference: (N, T, 68, 2) the clips (noise-free where the
        dataset has them); label (N,). Each clip goes to the mode of its class
        whose prototype is nearest; at most `size` residuals are kept per cell."""
        num_classes, num_modes = prototypes.shape[1:3]
        own = metrics.displacements(prototypes[np.arange(len(label)), label])  # (N, K, T-1, 68, 2)
        target = metrics.displacements(reference)
        nearest = metrics.motion_error(own, target[:, None]).argmin(1)
        residual = target - own[np.arange(len(label)), nearest]
        bank = np.zeros((num_classes, num_modes, size) + residual.shape[1:], np.float16)
        counts = np.zeros((num_classes, num_modes), np.int32)
        for c in range(num_classes):
            for k in range(num_modes):
                members = np.flatnonzero((label == c) & (nearest == k))
                members = rng.permutation(members)[:size]
                bank[c, k, : len(members)] = residual[members]
                counts[c, k] = len(members)
        return cls(bank, counts)

    def draw(self, sequences: np.ndarray, spread: float, rng: np.random.Generator) -> np.ndarray:
        """sequences: (N, C, K, T, 68, 2) in [-1, 1] -> the same with each
        (input, class, mode) moved by spread x one residual of its cell (a cell
        without residuals keeps its prototype)."""
        n, num_classes, num_modes = sequences.shape[:3]
        pick = (rng.random((n, num_classes, num_modes)) * self.counts).astype(np.int64)
        chosen = self.residuals[np.arange(num_classes)[None, :, None], np.arange(num_modes)[None, None, :], pick]
        chosen = np.where((self.counts > 0)[None, :, :, None, None, None], chosen.astype(np.float32), 0.0)
        iod = landmarks.inter_ocular_distance(sequences[..., 0, :, :])[..., None, None, None]
        moved = sequences.copy()
        moved[..., 1:, :, :] += spread * chosen * iod
        return moved


def render_warp(crop: np.ndarray, neutral: np.ndarray, sequences: np.ndarray) -> np.ndarray:
    """Frames drawn by the training-free piecewise-affine warp: crop uint8
    (S, S, 3); neutral (68, 2) and sequences (K, T, 68, 2) in its pixels ->
    uint8 (K, T, S, S, 3)."""
    return np.asarray(warp.warp_sequence(crop, neutral, sequences))


@nnx.jit
def _translate(generator, source, source_points, target_points):
    return generator(source, source_points, target_points)


def render_translator(stage, crop: np.ndarray, neutral: np.ndarray, sequences: np.ndarray,
                      chunk: int = 64) -> np.ndarray:
    """Frames of landmark sequences drawn by the trained translator.

    crop uint8 (S, S, 3); neutral (68, 2) and sequences (..., T, 68, 2) in its
    pixels -> uint8 (..., T, S, S, 3).
    """
    lead = sequences.shape[:-2]
    flat = np.asarray(sequences, np.float32).reshape(-1, landmarks.NUM_POINTS, 2)
    outputs = []
    for start in range(0, len(flat), chunk):
        targets = flat[start : start + chunk]
        n = len(targets)
        source = np.broadcast_to(np.asarray(crop, np.float32) / 127.5 - 1.0, (n, *crop.shape))
        out = _translate(stage.generator, source, np.broadcast_to(neutral, (n, 68, 2)), targets)
        outputs.append(np.asarray(out))
    frames = np.concatenate(outputs)
    return np.clip(np.round((frames + 1.0) * 127.5), 0, 255).astype(np.uint8).reshape(*lead, *crop.shape)
