"""The translator's adversary: a conditional PatchGAN (pix2pix).

It judges (frame, target heatmaps, neutral face) patch by patch, so a frame
must be real AND match the points and the identity; its hidden features
serve the translator's feature-matching loss (`cmm_jax.stages`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from cmm_jax.models.layers import LEAK, NUM_PARTS, group_norm, landmark_heatmaps


class PatchDiscriminator(nnx.Module):
    """Conditional PatchGAN: one real/fake logit per overlapping patch.

    Input: concat(image, heatmaps of the target points, neutral face), so it
    judges whether the frame is real AND matches the points and the identity.
    4x4 convolutions, stride 2 `num_layers` times then stride 1; at 64x64
    with 3 layers each logit sees a 46x46 patch. dtype: what the layers
    compute in (parameters float32); logits and features come out float32,
    for the losses.
    """

    def __init__(self, features: int = 32, num_layers: int = 3, dtype=jnp.float32, *, rngs: nnx.Rngs):
        widths = [3 + NUM_PARTS + 3] + [min(features * 2**i, 8 * features) for i in range(num_layers)]
        self.convs = nnx.List(
            [nnx.Conv(a, b, (4, 4), strides=2, dtype=dtype, rngs=rngs) for a, b in zip(widths[:-1], widths[1:])]
        )
        # No normalisation on the first layer (pix2pix), GroupNorm after.
        self.norms = nnx.List([group_norm(w, rngs, dtype) for w in widths[2:]])
        self.to_logit = nnx.Conv(widths[-1], 1, (4, 4), dtype=dtype, rngs=rngs)

    def __call__(self, image, source_image, target_points) -> tuple[jax.Array, list[jax.Array]]:
        """image, source_image: (B, H, W, 3); target_points: (B, 68, 2) ->
        logits (B, H / 2**num_layers, W / 2**num_layers, 1), hidden features."""
        heatmaps = landmark_heatmaps(target_points, image.shape[1])
        x = jnp.concatenate([image, heatmaps, source_image], axis=-1)
        features = []
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if i > 0:
                x = self.norms[i - 1](x)
            x = jax.nn.leaky_relu(x, LEAK)
            features.append(x.astype(jnp.float32))
        return self.to_logit(x).astype(jnp.float32), features
