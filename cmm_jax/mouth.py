"""The inside of the mouth where the lips part: cavity, teeth, tongue, drawn in JAX.

The warp renderer (`cmm_jax.warp`) can only move the photo's pixels, and the
photo's mouth is closed: an opening mouth stretches the lips across the gap.
`draw_mouth_interior` paints over that gap, inside the polygon of the target's
inner lips (points 60-67), what is behind the lips:

- a dark cavity, lighter (towards the lips' own colour) near the lips and
  darkest at the back;
- upper teeth, a band along the upper inner lip (61-63) that comes out from
  behind the lip as the lips part, its height a share of the opening up to a
  fixed tooth height, shorter and shaded towards the mouth corners (the dental
  arch turns away), with faint gaps between the teeth;
- a tongue in the lower part of a wide opening, and lower teeth along the lower
  inner lip (65-67) when the jaw drops a lot.

Nothing is a pasted texture: the colours (`mouth_palette`) come from the
source photo once per sequence. The cavity is its mouth region's darkest tone
(a low luminance percentile inside the outer lips, made darker, hue kept, and
no brighter than a fraction of the skin around the mouth); the teeth are its
face's bright tone (a high luminance percentile inside the jaw-and-brows
outline) pulled towards a warm off-white and dimmed when the skin around the
mouth is darker than the face (a mouth in shadow).

All lengths are in units of the target's mouth width (48-54) or of the
anti-aliasing feather (1 px per 64 px of image size), so a face looks the same
at any size. The drawing is gated by how far the inner lips have parted beyond
the source's own gap; below a small threshold the gate is exactly 0 and the
frame is returned unchanged, above it the gate rises smoothly (no flicker as a
mouth opens over a video).

Shapes: images (S, S, 3) float RGB in [0, 255]; points (68, 2) in pixels of the
S x S image (x right, y down). One frame per call; batch with `jax.lax.map` or
`jax.vmap`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from cmm_jax import landmarks

# Anti-aliasing: width of the soft edge of every region, in pixels per 64 px of image size.
FEATHER_PER_64 = 1.0

# Gate: the opening (mean inner-lip gap over mouth width, target minus source)
# at which drawing starts and where it is fully on.
OPEN_FROM, OPEN_FULL = 0.03, 0.07
# Upper teeth come out from behind the lip over these openings; their visible
# height is at most UPPER_TEETH_HEIGHT mouth widths and UPPER_TEETH_SHARE of the opening.
UPPER_TEETH_FROM, UPPER_TEETH_FULL = 0.05, 0.12
UPPER_TEETH_HEIGHT, UPPER_TEETH_SHARE = 0.15, 0.5
# Lower teeth (likewise) only for a large jaw drop; narrower than the upper
# ones (tooth edges times LOWER_TEETH_NARROWER) and in the upper jaw's shadow.
LOWER_TEETH_FROM, LOWER_TEETH_FULL = 0.25, 0.40
LOWER_TEETH_HEIGHT, LOWER_TEETH_SHARE = 0.08, 0.2
LOWER_TEETH_NARROWER, LOWER_TEETH_TONE = 0.7, 0.8
# Tongue: rises over these openings to TONGUE_SHARE of the opening, its top
# darker by TONGUE_TOP_SHADE (further back).
TONGUE_FROM, TONGUE_FULL = 0.12, 0.30
TONGUE_SHARE, TONGUE_TOP_SHADE = 0.4, 0.4
# Teeth span this share of the half inner-lip width from the centre; beyond it
# the corners stay dark (the dental arch turns away from the camera).
ARCH_HALF_WIDTH = 0.85
# Darkening of the teeth towards the corners (at the arch's end) and in the
# upper lip's shadow (within LIP_SHADOW_DEPTH mouth widths below it).
TEETH_CORNER_SHADE = 0.55
LIP_SHADOW, LIP_SHADOW_DEPTH = 0.3, 0.03
# Tooth boundaries, in half inner-lip widths from the centre (incisors wider
# than the teeth behind them, foreshortened towards the corners), and how dark
# the gaps between the teeth are and how wide (in feathers).
TOOTH_EDGES = (0.0, 0.34, 0.6, 0.8, 0.93)
TOOTH_GAP, TOOTH_GAP_WIDTH = 0.18, 0.4
# Cavity: the cavity tone at the lips, BACK_TONE of it deep inside (the
# change over BACK_DEPTH mouth widths), and a thin rim (RIM_DEPTH mouth
# widths) of the lips' inner side, the lips' colour times RIM_TONE.
BACK_TONE, BACK_DEPTH = 0.45, 0.06
RIM_DEPTH, RIM_TONE = 0.02, 0.5
# Palette: luminance percentiles of the mouth region (dark) and the face (bright).
DARK_PERCENTILE, BRIGHT_PERCENTILE = 0.1, 0.95
# Cavity: the dark tone times CAVITY_SCALE, at most CAVITY_MAX_SKIN of the skin luminance.
CAVITY_SCALE, CAVITY_MAX_SKIN = 0.4, 0.2
# Teeth: how much of the bright tone's colour gives way to WARM_WHITE (unit luminance).
TEETH_DESATURATION = 0.7
WARM_WHITE = (1.03, 1.0, 0.92)
# Tongue: the lips' colour times this.
TONGUE_TONE = 0.5
# The lips' colour inside the mouth (rim, tongue) is this much more saturated (moist, less lit).
INSIDE_SATURATION = 1.6
# Skin around the mouth: outside the outer lips, within this many mouth widths.
SKIN_RING = 0.2

# The drawn window, (height, width) as shares of the frame's side: the widest
# inner lips of smile_synth's generated smiles span about 0.19 x 0.34 of the
# frame. Inner lips (plus the feather) that do not fit are drawn on the whole frame.
WINDOW = (0.3, 0.45)

# ITU-R BT.601 luma weights.
_LUMA = (0.299, 0.587, 0.114)
# The face outline for the bright tone: the jaw, then the brows from the left back to the right.
_FACE_OUTLINE = landmarks.JAW + landmarks.LEFT_BROW[::-1] + landmarks.RIGHT_BROW[::-1]
# Inner-lip polylines from corner 60 to corner 64, over the upper and the lower lip.
_UPPER_INNER = (60, 61, 62, 63, 64)
_LOWER_INNER = (60, 67, 66, 65, 64)


class MouthPalette(NamedTuple):
    """Colours of one source face, each (3,) RGB in [0, 255]."""

    cavity: jax.Array
    lips: jax.Array
    teeth: jax.Array


def luminance(rgb: jax.Array) -> jax.Array:
    """(..., 3) RGB -> (...) luma, same units."""
    return rgb @ jnp.asarray(_LUMA, rgb.dtype)


def pixel_grid(size: int) -> jax.Array:
    """Pixel centres of a size x size image as (x, y): float32 (size, size, 2)."""
    ys, xs = jnp.meshgrid(jnp.arange(size, dtype=jnp.float32), jnp.arange(size, dtype=jnp.float32), indexing="ij")
    return jnp.stack([xs, ys], -1)


def signed_distance(pixels: jax.Array, polygon: jax.Array) -> jax.Array:
    """Signed distance (px) of pixels (..., 2) to a closed polygon (V, 2): > 0 inside.

    Distance to the nearest of the V edges; inside by the even-odd crossing
    test of a ray towards +x. A polygon of ~zero area has nothing inside.
    """
    x, y = pixels[..., 0, None], pixels[..., 1, None]  # (..., 1): edges along the last axis
    x0, y0 = polygon[:, 0], polygon[:, 1]  # (V,)
    dx, dy = jnp.roll(x0, -1) - x0, jnp.roll(y0, -1) - y0
    ox, oy = x - x0, y - y0  # (..., V)
    along = jnp.clip((ox * dx + oy * dy) / jnp.maximum(dx * dx + dy * dy, 1e-12), 0.0, 1.0)
    distance = jnp.sqrt(((ox - along * dx) ** 2 + (oy - along * dy) ** 2).min(-1))
    straddles = (y0 > y) != (y0 + dy > y)
    crossing_x = x0 + oy * dx / jnp.where(straddles, dy, 1.0)
    inside = (straddles & (x < crossing_x)).sum(-1) % 2 == 1
    return jnp.where(inside, distance, -distance)


def _soft_step(x: jax.Array, width) -> jax.Array:
    """0 below -width/2, 1 above width/2, linear between: an anti-aliased edge at x = 0."""
    return jnp.clip(0.5 + x / width, 0.0, 1.0)


def smoothstep(x: jax.Array, low: float, high: float) -> jax.Array:
    """0 at or below `low`, 1 at or above `high`, C1-smooth between."""
    t = jnp.clip((x - low) / (high - low), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _saturate(rgb: jax.Array, factor: float) -> jax.Array:
    """(..., 3) RGB with its chroma (its difference from its luminance) scaled by `factor`."""
    return jnp.clip(luminance(rgb)[..., None] + factor * (rgb - luminance(rgb)[..., None]), 0.0, 255.0)


def _masked_quantile(values: jax.Array, mask: jax.Array, q: float) -> jax.Array:
    """The q-quantile (0..1, lower) of values (N,) where mask (N,) is true; 0 if none is."""
    count = mask.sum()
    ordered = jnp.sort(jnp.where(mask, values, jnp.inf))
    index = jnp.clip(jnp.floor(q * (count - 1)).astype(jnp.int32), 0, values.shape[0] - 1)
    return jnp.where(count > 0, ordered[index], 0.0)


def _masked_mean(colours: jax.Array, weights: jax.Array) -> jax.Array:
    """Weighted mean colour: colours (N, 3), weights (N,) -> (3,); 0 for no weight."""
    return (colours * weights[:, None]).sum(0) / jnp.maximum(weights.sum(), 1e-6)


def mouth_width(points: jax.Array) -> jax.Array:
    """Distance between the outer mouth corners 48 and 54. (..., 68, 2) -> (...)."""
    delta = points[..., landmarks.MOUTH_LEFT, :] - points[..., landmarks.MOUTH_RIGHT, :]
    return jnp.sqrt((delta**2).sum(-1))


def opening(points: jax.Array) -> jax.Array:
    """How far the inner lips are apart: the mean gap of 61-67, 62-66 and 63-65,
    perpendicular to the inner-lip corners' line, over the mouth width. (..., 68, 2) -> (...)."""
    axis = points[..., 64, :] - points[..., 60, :]
    normal = jnp.stack([-axis[..., 1], axis[..., 0]], -1) / jnp.maximum(
        jnp.sqrt((axis**2).sum(-1, keepdims=True)), 1e-6
    )
    gaps = ((points[..., [67, 66, 65], :] - points[..., [61, 62, 63], :]) * normal[..., None, :]).sum(-1)
    return gaps.mean(-1) / jnp.maximum(mouth_width(points), 1e-6)


def mouth_palette(image: jax.Array, points: jax.Array) -> MouthPalette:
    """The colours of `image`'s mouth interior, from the photo itself.

    image: (S, S, 3) float RGB in [0, 255]; points: (68, 2) its face, in its
    pixels. The cavity is the darkest DARK_PERCENTILE of the luminance inside
    the outer lips (48-59), averaged, times CAVITY_SCALE (hue kept) and at most
    CAVITY_MAX_SKIN of the luminance of the skin ring around the lips; the
    lips are the mean colour between the outer and the inner lips (whatever
    the photo shows between its own inner lips left out); the teeth are the mean
    colour of the face's brightest pixels (above BRIGHT_PERCENTILE, inside the
    jaw-and-brows outline), TEETH_DESATURATION of the way to WARM_WHITE at
    the same luminance, times the skin ring's luminance over the face's (at
    most 1: a mouth in shadow has darker teeth).
    """
    image = image.astype(jnp.float32)
    colours = image.reshape(-1, 3)
    luma = luminance(colours)
    pixels = pixel_grid(image.shape[0]).reshape(-1, 2)
    to_lips = signed_distance(pixels, points[jnp.asarray(landmarks.OUTER_LIPS)])
    lips = to_lips > 0
    lips_only = lips & (signed_distance(pixels, points[jnp.asarray(landmarks.INNER_LIPS)]) <= 0)
    ring = (to_lips <= 0) & (to_lips > -SKIN_RING * mouth_width(points))
    face = signed_distance(pixels, points[jnp.asarray(_FACE_OUTLINE)]) > 0

    skin_luma = luminance(_masked_mean(colours, ring.astype(jnp.float32)))
    face_luma = luminance(_masked_mean(colours, face.astype(jnp.float32)))

    darkest = lips & (luma <= _masked_quantile(luma, lips, DARK_PERCENTILE))
    dark = _masked_mean(colours, darkest.astype(jnp.float32))
    cavity = dark * jnp.minimum(CAVITY_SCALE, CAVITY_MAX_SKIN * skin_luma / jnp.maximum(luminance(dark), 1e-6))

    brightest = face & (luma >= _masked_quantile(luma, face, BRIGHT_PERCENTILE))
    bright = _masked_mean(colours, brightest.astype(jnp.float32))
    white = luminance(bright) * jnp.asarray(WARM_WHITE) / luminance(jnp.asarray(WARM_WHITE))
    lighting = jnp.clip(skin_luma / jnp.maximum(face_luma, 1e-6), 0.0, 1.0)
    teeth = (bright + TEETH_DESATURATION * (white - bright)) * lighting
    return MouthPalette(cavity=cavity, lips=_masked_mean(colours, lips_only.astype(jnp.float32)), teeth=teeth)


def _lip_frame(pixels: jax.Array, points: jax.Array):
    """Pixels in the frame of the inner lips: (along, below_upper, above_lower), each (S, S).

    along: position between the inner corners, -1 at 60, 0 in the middle, +1
    at 64; below_upper / above_lower: pixels below the upper inner lip (61-63)
    / above the lower inner lip (65-67), perpendicular to the corners' line,
    the lips being piecewise-linear between their points.
    """
    corner = points[60]
    axis = points[64] - corner
    length = jnp.maximum(jnp.sqrt((axis**2).sum()), 1e-6)
    unit = axis / length
    normal = jnp.stack([-unit[1], unit[0]])  # points down the face

    def coordinates(p):
        offset = p - corner
        return 2.0 * (offset @ unit) / length - 1.0, offset @ normal

    along, down = coordinates(pixels)

    def lip_at(indices):
        knot_along, knot_down = coordinates(points[jnp.asarray(indices)])
        return jnp.interp(along, jax.lax.cummax(knot_along), knot_down)

    return along, down - lip_at(_UPPER_INNER), lip_at(_LOWER_INNER) - down


def _tooth_gaps(along: jax.Array, half_width: jax.Array, feather: float, scale: float = 1.0) -> jax.Array:
    """1 on a tooth, down to 1 - TOOTH_GAP on the boundaries between teeth
    (TOOTH_EDGES times `scale`). along (S, S) as in `_lip_frame`; half_width,
    feather in px. -> (S, S)."""
    edges = scale * jnp.asarray(TOOTH_EDGES)
    edges = jnp.concatenate([edges, -edges[1:]])
    distance = jnp.abs(along[..., None] - edges).min(-1) * half_width  # to the nearest boundary, px
    return 1.0 - TOOTH_GAP * jnp.exp(-((distance / (TOOTH_GAP_WIDTH * feather)) ** 2))


def interior_colours(
    pixels: jax.Array, depth: jax.Array, palette: MouthPalette, points: jax.Array, feather: float
) -> jax.Array:
    """The mouth's inside as it would look at every pixel: (S, S, 3) RGB in [0, 255].

    pixels (S, S, 2); depth (S, S): signed distance to the inner-lip polygon
    (px, > 0 inside); points (68, 2) the target face; feather: the soft-edge
    width (px). How much of teeth and tongue shows follows the target's
    `opening`. Only the values inside the polygon (and its feather) are used.
    """
    width = mouth_width(points)
    open_by = opening(points)
    along, below_upper, above_lower = _lip_frame(pixels, points)
    gap = below_upper + above_lower  # the opening at each pixel's column, px
    arch = jnp.sqrt(jnp.clip(1.0 - (along / ARCH_HALF_WIDTH) ** 4, 0.0, 1.0))
    half_width = 0.5 * jnp.sqrt(((points[64] - points[60]) ** 2).sum())

    inner_lips = _saturate(palette.lips, INSIDE_SATURATION)

    # Cavity: darker towards the back, the lips' inner side along its edge.
    inside = jnp.maximum(depth, 0.0)[..., None]
    colour = palette.cavity * (BACK_TONE + (1.0 - BACK_TONE) * jnp.exp(-inside / (BACK_DEPTH * width)))
    rim = jnp.exp(-inside / (RIM_DEPTH * width))
    colour = colour + rim * (RIM_TONE * inner_lips - colour)

    # Tongue: a mound on the lower lip, its top darker (further back).
    tongue_height = TONGUE_SHARE * gap * (1.0 - along**2) * smoothstep(open_by, TONGUE_FROM, TONGUE_FULL)
    tongue = _soft_step(tongue_height - above_lower, feather)
    tongue_shade = 1.0 - TONGUE_TOP_SHADE * jnp.clip(above_lower / jnp.maximum(tongue_height, feather), 0.0, 1.0)
    colour = colour + tongue[..., None] * (TONGUE_TONE * inner_lips * tongue_shade[..., None] - colour)

    # Teeth: bands along the lips, shaded towards the corners, with gaps between them.
    corner_shade = 1.0 - TEETH_CORNER_SHADE * along**2
    upper_height = jnp.minimum(UPPER_TEETH_SHARE * gap, UPPER_TEETH_HEIGHT * width) * arch
    upper_height = upper_height * smoothstep(open_by, UPPER_TEETH_FROM, UPPER_TEETH_FULL)
    upper = _soft_step(upper_height - below_upper, feather)
    lip_shadow = 1.0 - LIP_SHADOW * jnp.exp(-jnp.maximum(below_upper, 0.0) / (LIP_SHADOW_DEPTH * width))
    upper_shade = corner_shade * _tooth_gaps(along, half_width, feather) * lip_shadow
    lower_height = jnp.minimum(LOWER_TEETH_SHARE * gap, LOWER_TEETH_HEIGHT * width) * arch
    lower_height = lower_height * smoothstep(open_by, LOWER_TEETH_FROM, LOWER_TEETH_FULL)
    lower = _soft_step(lower_height - above_lower, feather)
    lower_shade = LOWER_TEETH_TONE * corner_shade * _tooth_gaps(along, half_width, feather, LOWER_TEETH_NARROWER)
    colour = colour + lower[..., None] * (palette.teeth * lower_shade[..., None] - colour)
    colour = colour + upper[..., None] * (palette.teeth * upper_shade[..., None] - colour)
    return colour


def _feather(size: int) -> float:
    """The anti-aliasing width, px, in a size x size image."""
    return FEATHER_PER_64 * size / 64.0


def _gate(source_points: jax.Array, target_points: jax.Array) -> jax.Array:
    """() in [0, 1]: how much of the interior shows, from the opening beyond the
    source's (0 up to OPEN_FROM, 1 from OPEN_FULL, smooth between)."""
    return smoothstep(opening(target_points) - opening(source_points), OPEN_FROM, OPEN_FULL)


def lips_part(source_points: jax.Array, target_points: jax.Array) -> jax.Array:
    """() bool: do the target's lips part beyond the source's, so that
    `draw_mouth_interior` draws anything?"""
    return _gate(source_points, target_points) > 0.0


def _depth_and_alpha(pixels: jax.Array, source_points: jax.Array, target_points: jax.Array, size: int):
    """(depth, alpha), each like pixels (..., 2) without its last axis: the signed
    distance to the target's inner-lip polygon (px, > 0 inside) and the
    interior's opacity (see `mouth_mask`) in a size x size frame."""
    depth = signed_distance(pixels, target_points[jnp.asarray(landmarks.INNER_LIPS)])
    return depth, _soft_step(depth, _feather(size)) * _gate(source_points, target_points)


def mouth_mask(source_points: jax.Array, target_points: jax.Array, size: int) -> jax.Array:
    """Opacity of the drawn interior, (S, S) in [0, 1]: a soft mask of the
    target's inner-lip polygon (feather FEATHER_PER_64 px per 64 px of size),
    times the gate on the opening beyond the source's (OPEN_FROM .. OPEN_FULL).
    Points (68, 2) in pixels of the size x size image."""
    return _depth_and_alpha(pixel_grid(size), source_points, target_points, size)[1]


def paint_window(frame: jax.Array, origin: jax.Array, shape: tuple[int, int], paint) -> jax.Array:
    """`frame` (S, S, C) with its window of `shape` (height, width) at `origin`
    (int32 (2,): row, column; inside the frame) replaced by paint(window,
    pixels): window (h, w, C) and the pixels' positions in the frame (h, w, 2)
    as (x, y), the same numbers `pixel_grid` gives there."""
    height, width = shape
    ys, xs = jnp.meshgrid(jnp.arange(height, dtype=jnp.int32), jnp.arange(width, dtype=jnp.int32), indexing="ij")
    pixels = jnp.stack([xs + origin[1], ys + origin[0]], -1).astype(jnp.float32)
    window = jax.lax.dynamic_slice(frame, (origin[0], origin[1], 0), (height, width, frame.shape[2]))
    return jax.lax.dynamic_update_slice(frame, paint(window, pixels), (origin[0], origin[1], 0))


def window_shape(size: int, shares: tuple[float, float]) -> tuple[int, int]:
    """(height, width) in pixels of a window that is `shares` of a size x size frame's side."""
    return tuple(min(size, max(1, round(share * size))) for share in shares)


def draw_mouth_interior(
    frame: jax.Array, palette: MouthPalette, source_points: jax.Array, target_points: jax.Array
) -> jax.Array:
    """The warped frame with the inside of the mouth drawn where the lips part.

    frame: (S, S, 3) float RGB in [0, 255], the source photo warped from
    source_points to target_points (each (68, 2), pixels of the frame);
    palette: `mouth_palette` of the source photo. Returns (S, S, 3): the
    frame blended with `interior_colours` through `mouth_mask`; `frame`
    itself while the lips have not parted beyond the source's (then nothing
    is computed, outside `vmap`). The mask is zero beyond half a feather
    outside the inner lips, so only a WINDOW around them is drawn (the same
    pixels as drawing the whole frame), or the whole frame where they do not fit.
    """
    size = frame.shape[0]
    feather = _feather(size)
    shape = window_shape(size, WINDOW)

    def paint(window, pixels):
        depth, alpha = _depth_and_alpha(pixels, source_points, target_points, size)
        colours = interior_colours(pixels, depth, palette, target_points, feather)
        return window + alpha[..., None] * (colours - window)

    def draw():
        inner = target_points[jnp.asarray(landmarks.INNER_LIPS)][:, ::-1]  # (row, column)
        low = jnp.clip(jnp.floor(inner.min(0) - feather).astype(jnp.int32), 0, size - 1)
        high = jnp.clip(jnp.ceil(inner.max(0) + feather).astype(jnp.int32), 0, size - 1)
        extent, room = high - low + 1, jnp.asarray(shape, jnp.int32)
        origin = jnp.clip(low - (room - extent) // 2, 0, size - room)
        return jax.lax.cond(jnp.all(extent <= room), lambda: paint_window(frame, origin, shape, paint),
                            lambda: paint(frame, pixel_grid(size)))

    return jax.lax.cond(lips_part(source_points, target_points), draw, lambda: frame)
