"""The translator stage's faces: a bank of augmented photos for data without frames.

Training pairs (neutral face, frame t) come from the dataset's frames when it
has them (UvA-NEMO, MUG). `smile_synth` has landmarks only, so its synthetic
people get faces from real photos (the config's `translator.photos`;
scikit-image's astronaut by default): a bank of augmented copies of each photo
(alignment jitter, mirror image, colour jitter, and the face reshaped towards
the neutral shape of a training identity with the warp renderer), and each
training clip's motion, scaled to the face, is applied to a face of the bank
with the warp renderer to make the target frames. What this can and cannot
teach the network is in BUILD.md: it learns to move the photo's pixels as the
landmarks say, not what a mouth's inside or a closed eye looks like (the
mouth's inside in its targets is the warp renderer's schematic drawing).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from skimage import color

from cmm_jax import alignment, face, files, landmarks, mouth, warp
from cmm_jax.errors import UserError

# Augmentation ranges of the face bank.
ROTATION_DEGREES = 6.0
SCALE_JITTER = 0.05
SHIFT_JITTER = 0.03  # of the image side
BRIGHTNESS_JITTER = 0.12
CONTRAST_RANGE = (0.8, 1.2)
SATURATION_RANGE = (0.7, 1.3)
HUE_JITTER = 0.03  # of the colour wheel


class FaceBank(nnx.Module):
    """Augmented faces and their points, a frozen input of the translator stage."""

    def __init__(self, images: np.ndarray, points: np.ndarray):
        self.images = nnx.Variable(jnp.asarray(images, jnp.uint8))  # (N, S, S, 3)
        self.points = nnx.Variable(jnp.asarray(points, jnp.float32))  # (N, 68, 2) pixels
        # Each face's mouth colours (`mouth.mouth_palette`), taken once rather than at every step.
        palettes = jax.jit(jax.vmap(mouth.mouth_palette))(self.images[...].astype(jnp.float32), self.points[...])
        self.palettes = nnx.Variable(jnp.stack(palettes, 1))  # (N, 3, 3): cavity, lips, teeth RGB

    def palette(self, index: jax.Array) -> mouth.MouthPalette:
        """The mouth palettes of faces `index` (B,), batched."""
        return mouth.MouthPalette(*jnp.moveaxis(self.palettes[...][index], 1, 0))


def _photos(spec: str) -> list[tuple[str, np.ndarray]]:
    if not spec:
        return [("astronaut", files.astronaut())]
    return [(path, files.read_photo(path)) for path in (p.strip() for p in spec.split(",")) if path]


def _jitter_matrix(rng: np.random.Generator, size: int) -> np.ndarray:
    """A small random similarity about the crop centre, (3, 3)."""
    angle = np.deg2rad(rng.uniform(-ROTATION_DEGREES, ROTATION_DEGREES))
    scale = 1.0 + rng.uniform(-SCALE_JITTER, SCALE_JITTER)
    shift = rng.uniform(-SHIFT_JITTER, SHIFT_JITTER, 2) * size
    center = np.array([(size - 1) / 2.0] * 2)
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    matrix = np.eye(3)
    matrix[:2, :2] = rotation
    matrix[:2, 2] = center - rotation @ center + shift
    return matrix


def _colour_jitter(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    hsv = color.rgb2hsv(image)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-HUE_JITTER, HUE_JITTER)) % 1.0
    hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(*SATURATION_RANGE), 0, 1)
    rgb = color.hsv2rgb(hsv)
    rgb = (rgb - rgb.mean()) * rng.uniform(*CONTRAST_RANGE) + rgb.mean() + rng.uniform(-BRIGHTNESS_JITTER, BRIGHTNESS_JITTER)
    return np.clip(np.round(rgb * 255), 0, 255).astype(np.uint8)


def build_face_bank(photos: str, size: int, identities: np.ndarray, count: int, seed: int) -> FaceBank:
    """`count` augmented faces at `size` x `size`.

    photos: comma-separated paths ("" for the astronaut). identities:
    (N, 68, 2) neutral shapes in pixels of a 64 crop; each face is warped a
    random part of the way towards one of them, so the translator sees more
    face shapes than the photos have.
    """
    rng = np.random.default_rng(seed)
    fitted = []
    for name, image in _photos(photos):
        try:
            fitted.append((image, face.find_face(image).points))
        except face.NoFaceError:
            raise UserError(f"translator.photos: no face found in {name}") from None
    images, points = [], []
    for i in range(count):
        image, photo_points = fitted[i % len(fitted)]
        matrix = _jitter_matrix(rng, size) @ np.vstack([alignment.alignment_matrix(photo_points, size), [0, 0, 1]])
        crop = alignment.warp_to_crop(image, matrix[:2], size)
        crop_points = landmarks.apply_affine(matrix[:2], photo_points)
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
            crop_points = landmarks.mirror(crop_points, size)
        # Reshape towards a training identity (similarity-aligned to this face).
        shape = identities[rng.integers(len(identities))] * (size / landmarks.CROP_SIZE)
        shape = landmarks.apply_affine(landmarks.fit_similarity(shape, crop_points), shape)
        target = crop_points + rng.uniform(0.0, 1.0) * (shape - crop_points)
        crop = np.asarray(warp.warp_sequence(crop, crop_points.astype(np.float32), target[None].astype(np.float32)))[0]
        images.append(_colour_jitter(crop, rng))
        points.append(target)
    return FaceBank(np.stack(images), np.stack(points))


def face_bank_for(config, source) -> dict[str, nnx.Module]:
    """The frozen extras of the translator stage: a face bank when the data has no frames."""
    example = source[0]
    if "frames" in example:
        return {}
    count = min(len(source), 512)
    identities = np.stack([np.asarray(source[i]["landmarks"][0]) for i in range(count)])
    bank = build_face_bank(
        config.translator.photos, config.translator.image_size, identities,
        config.translator.bank_size, config.seed,
    )
    return {"faces": bank}
