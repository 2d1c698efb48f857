"""The Fréchet video distance (FVD) feature network: Inflated 3D ConvNet (I3D).

FVD (Unterthiner et al. 2018) is the Fréchet distance between Gaussians fitted
to the 400 Kinetics logits of an I3D network (Carreira & Zisserman 2017) on
real and on generated videos, resized to 224 x 224, scaled to [-1, 1], at
least 9 frames. `I3D` is that network (the Inception-v1 variant with
DeepMind's channel table), channels-last (N, T, H, W, C); `fvd` applies
`cmm_jax.metrics.frechet_distance`. Nothing is downloaded: the user converts
a Kinetics-400 checkpoint once and points `video_features` at the npz.

Weights file. `save_weights` writes, and `load_weights` reads, a `.npz` with
one array per model variable, keyed by its '/'-joined path in the model, e.g.
`conv3d_1a_7x7/conv/kernel`, `mixed_5b/branch_2b/batch_norm/mean`,
`logits/kernel`. To convert DeepMind's kinetics-i3d checkpoint (Sonnet,
`data/checkpoints/rgb_scratch/model.ckpt` or `rgb_imagenet/model.ckpt`; the
TF-Hub module `deepmind/i3d-kinetics-400/1` that the FVD reference code uses
was exported from the same Sonnet code) read every variable with
`tf.train.load_checkpoint(path).get_tensor(name)`, drop the scope prefix up
to and including `inception_i3d/`, and rename:

- `Conv3d_1a_7x7`, `Conv3d_2b_1x1`, `Conv3d_2c_3x3`, `Mixed_3b` ... `Mixed_5c`
  -> the same names in lower case (`conv3d_1a_7x7`, `mixed_3b`, ...);
- inside a Mixed block: `Branch_0/Conv3d_0a_1x1` -> `branch_0`,
  `Branch_1/Conv3d_0a_1x1` -> `branch_1a`, `Branch_1/Conv3d_0b_3x3` ->
  `branch_1b`, `Branch_2/Conv3d_0a_1x1` -> `branch_2a`,
  `Branch_2/Conv3d_0b_3x3` -> `branch_2b` (in Mixed_5b DeepMind named it
  `Branch_2/Conv3d_0a_3x3`), `Branch_3/Conv3d_0b_1x1` -> `branch_3b`;
- inside a unit: `conv_3d/w` -> `conv/kernel` (same (t, h, w, in, out)
  layout); `batch_norm/beta` -> `batch_norm/bias`, `batch_norm/moving_mean`
  -> `batch_norm/mean`, `batch_norm/moving_variance` -> `batch_norm/var`,
  each reshaped to (C,) (Sonnet v1 stores them as (1, 1, 1, 1, C)); Sonnet
  v1's BatchNorm learns no scale (gamma) by default, so `batch_norm/scale`
  is np.ones(C), or gamma where a checkpoint has one (PyTorch ports have
  `bn.weight`, `bn.bias`, `bn.running_mean`, `bn.running_var`, and conv
  weights (out, in, t, h, w): transpose them with (2, 3, 4, 1, 0));
- `Logits/Conv3d_0c_1x1/conv_3d/w` (1, 1, 1, 1024, 400) -> `logits/kernel`
  reshaped to (1024, 400), `Logits/Conv3d_0c_1x1/conv_3d/b` -> `logits/bias`.

Then `np.savez(path, **arrays)`; `load_weights` checks every name and shape.

One difference from the TensorFlow reference remains: the resize here is
`jax.image.resize` bilinear (half-pixel centres, antialiased when shrinking),
TF1's `resize_bilinear` is neither, so absolute FVD values differ slightly
from published ones; compare FVDs computed with the same code.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from cmm_jax import files
from cmm_jax.metrics import frechet_distance

IMAGE_SIZE = 224
NUM_CLASSES = 400
POOL_FEATURES = 1024
# Fewer frames leave less than the 2-frame window of the final average pool.
MIN_FRAMES = 9
BATCH_NORM_EPSILON = 1e-3

# Output channels of each Inception block's branches:
# (branch_0, branch_1a, branch_1b, branch_2a, branch_2b, branch_3b).
INCEPTION_CHANNELS = {
    "mixed_3b": (64, 96, 128, 16, 32, 32),
    "mixed_3c": (128, 128, 192, 32, 96, 64),
    "mixed_4b": (192, 96, 208, 16, 48, 64),
    "mixed_4c": (160, 112, 224, 24, 64, 64),
    "mixed_4d": (128, 128, 256, 24, 64, 64),
    "mixed_4e": (112, 144, 288, 32, 64, 64),
    "mixed_4f": (256, 160, 320, 32, 128, 128),
    "mixed_5b": (256, 160, 320, 32, 128, 128),
    "mixed_5c": (384, 192, 384, 48, 128, 128),
}


def _inception_out(channels: tuple[int, ...]) -> int:
    b0, _, b1, _, b2, b3 = channels
    return b0 + b1 + b2 + b3


class Unit3D(nnx.Module):
    """Conv3d (no bias, TF 'SAME' padding) + BatchNorm (running statistics) + ReLU."""

    def __init__(self, in_features: int, out_features: int, kernel: int, stride: int = 1, *, rngs: nnx.Rngs):
        self.conv = nnx.Conv(
            in_features, out_features, kernel_size=(kernel,) * 3, strides=(stride,) * 3,
            padding="SAME", use_bias=False, rngs=rngs,
        )
        self.batch_norm = nnx.BatchNorm(
            out_features, use_running_average=True, epsilon=BATCH_NORM_EPSILON, rngs=rngs
        )

    def __call__(self, x):
        """x: (N, T, H, W, C_in) -> (N, T', H', W', C_out)."""
        return jax.nn.relu(self.batch_norm(self.conv(x)))


def _max_pool(x, window: tuple[int, int, int], stride: tuple[int, int, int]):
    """3D max pooling with TF 'SAME' padding (pads with -inf)."""
    return nnx.max_pool(x, window_shape=window, strides=stride, padding="SAME")


class Inception(nnx.Module):
    """Four branches, concatenated on channels: 1x1x1; 1x1x1 -> 3x3x3;
    1x1x1 -> 3x3x3; 3x3x3 max pool -> 1x1x1."""

    def __init__(self, in_features: int, channels: tuple[int, ...], *, rngs: nnx.Rngs):
        b0, b1a, b1b, b2a, b2b, b3b = channels
        self.branch_0 = Unit3D(in_features, b0, 1, rngs=rngs)
        self.branch_1a = Unit3D(in_features, b1a, 1, rngs=rngs)
        self.branch_1b = Unit3D(b1a, b1b, 3, rngs=rngs)
        self.branch_2a = Unit3D(in_features, b2a, 1, rngs=rngs)
        self.branch_2b = Unit3D(b2a, b2b, 3, rngs=rngs)
        self.branch_3b = Unit3D(in_features, b3b, 1, rngs=rngs)

    def __call__(self, x):
        """x: (N, T, H, W, C_in) -> (N, T, H, W, sum of branch outputs)."""
        return jnp.concatenate(
            [
                self.branch_0(x),
                self.branch_1b(self.branch_1a(x)),
                self.branch_2b(self.branch_2a(x)),
                self.branch_3b(_max_pool(x, (3, 3, 3), (1, 1, 1))),
            ],
            axis=-1,
        )


class I3D(nnx.Module):
    """Inception-v1 I3D: videos -> 1024-d pooled features and 400 Kinetics logits.

    image_size: the side frames are resized to (224 for Kinetics weights; the
    tests use less to run fast on CPU).
    """

    def __init__(self, image_size: int = IMAGE_SIZE, num_classes: int = NUM_CLASSES, *, rngs: nnx.Rngs):
        self.image_size = image_size
        self.conv3d_1a_7x7 = Unit3D(3, 64, 7, stride=2, rngs=rngs)
        self.conv3d_2b_1x1 = Unit3D(64, 64, 1, rngs=rngs)
        self.conv3d_2c_3x3 = Unit3D(64, 192, 3, rngs=rngs)
        in_features = 192
        for name, channels in INCEPTION_CHANNELS.items():
            setattr(self, name, Inception(in_features, channels, rngs=rngs))
            in_features = _inception_out(channels)
        self.logits = nnx.Linear(POOL_FEATURES, num_classes, rngs=rngs)

    def preprocess(self, videos):
        """uint8 or float videos in [0, 255] (N, T, H, W, 3) -> float32 (N, T, S, S, 3) in [-1, 1]."""
        videos = jnp.asarray(videos, jnp.float32)
        size = self.image_size
        videos = jax.image.resize(videos, (*videos.shape[:2], size, size, 3), method="bilinear")
        return videos / 127.5 - 1.0

    def pool(self, videos):
        """Videos (N, T, H, W, 3) in [0, 255] -> pooled features (N, 1024).

        The reference's final 2 x 7 x 7 VALID average pool (at 224 px; here
        the whole remaining frame) followed by the mean over its time
        positions.
        """
        if videos.shape[1] < MIN_FRAMES:
            raise ValueError(f"I3D needs at least {MIN_FRAMES} frames, got {videos.shape[1]}")
        x = self.conv3d_1a_7x7(self.preprocess(videos))
        x = _max_pool(x, (1, 3, 3), (1, 2, 2))
        x = self.conv3d_2c_3x3(self.conv3d_2b_1x1(x))
        x = _max_pool(x, (1, 3, 3), (1, 2, 2))
        x = self.mixed_3c(self.mixed_3b(x))
        x = _max_pool(x, (3, 3, 3), (2, 2, 2))
        x = self.mixed_4f(self.mixed_4e(self.mixed_4d(self.mixed_4c(self.mixed_4b(x)))))
        x = _max_pool(x, (2, 2, 2), (2, 2, 2))
        x = self.mixed_5c(self.mixed_5b(x))
        per_frame = x.mean(axis=(2, 3))  # (N, T', C)
        windows = 0.5 * (per_frame[:, 1:] + per_frame[:, :-1])
        return windows.mean(axis=1)

    def features(self, videos, kind: str = "logits"):
        """Videos (N, T, H, W, 3) in [0, 255] -> logits (N, 400) or pooled features (N, 1024)."""
        if kind not in ("logits", "pool"):
            raise ValueError(f"kind must be 'logits' or 'pool', got {kind!r}")
        pooled = self.pool(videos)
        return self.logits(pooled) if kind == "logits" else pooled

    def __call__(self, videos):
        """Videos (N, T, H, W, 3) in [0, 255] -> Kinetics logits (N, 400)."""
        return self.features(videos, "logits")


def _flat_variables(model: nnx.Module) -> dict[str, nnx.Variable]:
    """Every variable of the model (parameters and batch statistics) by '/'-joined path."""
    flat = nnx.to_flat_state(nnx.state(model))
    return {"/".join(str(part) for part in path): variable for path, variable in flat}


def save_weights(model: I3D, path: str) -> None:
    """Writes every variable of the model to a `.npz` keyed by '/'-joined path."""
    files.write_npz(path, **{name: np.asarray(variable.get_value())
                             for name, variable in _flat_variables(model).items()})


def load_weights(model: I3D, path: str) -> None:
    """Sets every variable of the model from a `.npz` written by `save_weights`
    (or converted as the module docstring describes).

    Raises ValueError naming the first missing, misshapen or unexpected key.
    """
    expected = _flat_variables(model)
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files}
    for name, variable in expected.items():
        if name not in arrays:
            raise ValueError(f"{path}: missing weight {name!r}")
        if arrays[name].shape != tuple(variable.shape):
            raise ValueError(
                f"{path}: weight {name!r} has shape {arrays[name].shape}, the model needs {tuple(variable.shape)}"
            )
    unexpected = sorted(set(arrays) - set(expected))
    if unexpected:
        raise ValueError(f"{path}: unexpected weight {unexpected[0]!r}")
    for name, variable in expected.items():
        variable.set_value(jnp.asarray(arrays[name], variable.dtype))


def fvd(features_real: np.ndarray, features_generated: np.ndarray) -> float:
    """Fréchet video distance between two (N, F) sets of I3D features."""
    return frechet_distance(np.asarray(features_real, np.float64), np.asarray(features_generated, np.float64))


@nnx.jit(static_argnames="kind")
def _features(model: I3D, videos, kind: str):
    return model.features(videos, kind)


def video_features(
    videos: np.ndarray,
    weights_path: str,
    batch_size: int = 8,
    kind: str = "logits",
    image_size: int = IMAGE_SIZE,
) -> np.ndarray:
    """I3D features of videos with the weights in `weights_path`.

    videos: uint8 or float (N, T, H, W, 3) in [0, 255], T >= MIN_FRAMES ->
    float32 (N, 400) logits (kind="logits", the FVD features) or (N, 1024)
    (kind="pool"). The last batch is padded, so one compilation serves all.
    """
    model = nnx.eval_shape(lambda: I3D(image_size, rngs=nnx.Rngs(0)))
    load_weights(model, weights_path)
    videos = np.asarray(videos)
    batch_size = min(batch_size, len(videos))
    outputs = []
    for start in range(0, len(videos), batch_size):
        batch = videos[start : start + batch_size]
        padding = batch_size - len(batch)
        if padding:
            batch = np.concatenate([batch, np.zeros((padding, *batch.shape[1:]), batch.dtype)])
        outputs.append(np.asarray(_features(model, batch, kind))[: batch_size - padding])
    return np.concatenate(outputs)
