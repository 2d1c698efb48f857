"""Facial action units: displacement fields and their timing.

The one model of how a face moves, shared by the synthetic smiles of
`cmm_jax.data.synth` and the fake videos of `cmm_jax.data.fake`:
`au_basis` derives each action unit's displacement field from a person's
own neutral face (its sources are in `synth`'s module docstring);
`expression_path` mixes fields on the template into a smile or one of MUG's
emotions with an onset, apex and offset; `ramp` and `wiggle` are the smooth
curves both draw their timing with.

Displacements are in units of the inter-ocular distance (IOD, outer eye
corners 36-45), x to the image right, y down; "right" is the subject's
right, on the image left.
"""

from __future__ import annotations

import functools

import numpy as np

from cmm_jax import alignment, landmarks

MUG_EMOTIONS = ("anger", "disgust", "fear", "happiness", "sadness", "surprise")
# Expression kinds `expression_path` knows: UvA-NEMO's classes, MUG's emotions.
SMILE_KINDS = ("posed", "spontaneous")
KINDS = SMILE_KINDS + ("neutral",) + MUG_EMOTIONS


@functools.cache
def template_unit() -> np.ndarray:
    """The crop template in face-frame IOD units (68, 2), read-only."""
    template = alignment.mean_neutral_shape(landmarks.CROP_SIZE).astype(np.float64)
    eye_mid = 0.5 * (template[landmarks.RIGHT_EYE_OUTER] + template[landmarks.LEFT_EYE_OUTER])
    unit = (template - eye_mid) / landmarks.inter_ocular_distance(template)
    unit.setflags(write=False)
    return unit


_MIDLINE = landmarks.MIRROR == np.arange(landmarks.NUM_POINTS)


def _field(entries: dict[int, tuple[float, float]]) -> np.ndarray:
    field = np.zeros((landmarks.NUM_POINTS, 2))
    for index, displacement in entries.items():
        field[index] = displacement
    return field


def symmetric_field(one_side: dict[int, tuple[float, float]]) -> np.ndarray:
    """A field given on the subject's right side (image left), mirrored to the left."""
    right = _field(one_side)
    field = right + landmarks.mirror(right)
    # Points on the midline appear on both sides: count them once.
    field[_MIDLINE] *= 0.5
    return field


# Action-unit fields from a neutral shape.
#
# Every field is first computed in the face's own frame: origin at the outer
# eye corners' midpoint, x along the eye line, unit = the shape's IOD; then
# mapped back. Constants are set so that on the template the fields are close
# to v1's (AU25's lower lip now drops as a whole).

# Linear AU displacement fields (F, 68, 2) at intensity 1, in this order:
AU_FIELDS = ("au12_right", "au12_left", "au6", "au25", "au26", "eye_closure", "au10")

# AU12 of the subject's right corner (48): neighbouring lip points follow the
# corner with these weights; the lower lip mostly sideways (it stretches).
_AU12_UPPER = {48: 1.0, 60: 0.9, 49: 0.6, 61: 0.35, 50: 0.3, 51: 0.08, 62: 0.08}
_AU12_LOWER = {59: 0.55, 67: 0.35, 58: 0.25, 57: 0.08, 66: 0.08}
_AU12_LOWER_RISE = 0.25  # share of the corner's vertical move the lower lip makes
# The cheek bulges with the pull: jaw contour at cheek height out, nose wing up (IOD at v1's reach).
_AU12_CHEEK = {2: (-0.012, -0.01), 3: (-0.018, -0.012), 4: (-0.012, -0.008), 31: (-0.01, -0.012)}
_AU12_REACH = 0.135  # corner excursion on the template at intensity 1, IOD
# Red-lip points that thin when the mouth stretches (right half; midline counted half).
_UPPER_VERMILION = {49: 1.0, 50: 1.0, 51: 0.5}
_LOWER_VERMILION = {59: 1.0, 58: 1.0, 57: 0.5}

# AU6: lower lid up by this share of the eye's aperture (v1: 0.04 IOD on the template),
# upper lid a little down; the rest in IOD.
AU6_LID_RISE = 0.4
_AU6_UPPER_LID = {37: 0.08, 38: 0.06}  # share of the aperture, downwards
_AU6_FIXED = {
    36: (0.004, -0.012),  # outer eye corner pushed up and in (crow's feet)
    17: (0.0, 0.03), 18: (0.0, 0.025), 19: (0.0, 0.012),  # outer brow lowered
    1: (0.0, -0.015), 2: (0.0, -0.025), 3: (0.0, -0.02),  # cheek contour up
    48: (0.0, -0.015), 31: (0.0, -0.01),  # corner and nose wing lifted by the cheek
}
# AU10 on the template (upper lip raiser, levator labii superioris, right half):
# the upper lip's centre rises most, the nose wing with it.
_AU10 = {
    50: (0.0, -0.06), 51: (0.0, -0.06), 49: (0.0, -0.045), 48: (0.0, -0.012),
    61: (0.0, -0.05), 62: (0.0, -0.05), 60: (0.0, -0.015),
    31: (0.005, -0.02), 32: (0.0, -0.015), 33: (0.0, -0.012),
}

# Upper-lid point -> the lower-lid point below it (eye closure pulls one to the other).
EYELID_PAIRS = np.array([(37, 41), (38, 40), (43, 47), (44, 46)])
# The lids never meet: AU6 lid rise + eye closure is capped at this share of the gap.
MAX_LID_CLOSURE = 0.95

# AU25 on the template (lips part: lower lip down, upper lip a little up).
# The lower lip drops nearly as a whole (v1 thinned it, which inverted lips
# at the larger intensities of v2).
_AU25 = {
    66: (0.0, 0.10), 67: (0.0, 0.085), 62: (0.0, -0.025), 61: (0.0, -0.022),
    57: (0.0, 0.085), 58: (0.0, 0.072), 59: (0.0, 0.04), 51: (0.0, -0.02), 50: (0.0, -0.018),
}
# AU26 on the template: the jaw turns about the ear, points move down by how
# close they are to the chin; the lip corners follow part way and draw in.
_JAW_DROP = 0.30
_AU26 = {
    **{i: (0.0, _JAW_DROP * w) for i, w in {8: 1.0, 7: 0.95, 6: 0.82, 5: 0.62, 4: 0.38, 3: 0.17, 2: 0.05}.items()},
    **{i: (0.0, _JAW_DROP * w) for i, w in {57: 0.85, 58: 0.82, 59: 0.7, 66: 0.88, 67: 0.85}.items()},
    48: (0.02, 0.09), 60: (0.015, 0.105), 49: (0.005, 0.03), 61: (0.0, 0.02),
}


def face_frame(neutral: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(points in the face's own frame (..., 68, 2), origin, x axis, scale) of a shape (..., 68, 2)."""
    right, left = neutral[..., landmarks.RIGHT_EYE_OUTER, :], neutral[..., landmarks.LEFT_EYE_OUTER, :]
    origin = 0.5 * (right + left)
    scale = np.linalg.norm(left - right, axis=-1)
    x_axis = (left - right) / scale[..., None]
    y_axis = np.stack([-x_axis[..., 1], x_axis[..., 0]], -1)  # x right, y down
    centred = neutral - origin[..., None, :]
    local = np.stack([(centred * x_axis[..., None, :]).sum(-1), (centred * y_axis[..., None, :]).sum(-1)], -1)
    return local / scale[..., None, None], origin, x_axis, scale


def _from_face_frame(fields: np.ndarray, x_axis: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Displacements (..., F, 68, 2) in the face frame -> the shape's own coordinates."""
    y_axis = np.stack([-x_axis[..., 1], x_axis[..., 0]], -1)
    x_axis, y_axis = x_axis[..., None, None, :], y_axis[..., None, None, :]
    return scale[..., None, None, None] * (fields[..., :1] * x_axis + fields[..., 1:] * y_axis)


def _cheekbone(q: np.ndarray) -> np.ndarray:
    """Zygomaticus major's origin on the subject's right: the outline at cheekbone height. (..., 2)."""
    return 0.5 * (q[..., 1, :] + q[..., 2, :])


def _lip_thickness(q: np.ndarray) -> np.ndarray:
    """Upper + lower vermilion height, face-frame units. (..., 68, 2) -> (...)."""
    upper = (q[..., [61, 62, 63], 1] - q[..., [50, 51, 52], 1]).mean(-1)
    lower = (q[..., [58, 57, 56], 1] - q[..., [67, 66, 65], 1]).mean(-1)
    return upper + lower


def _eye_aperture(q: np.ndarray) -> np.ndarray:
    """Right eye's lid gap (palpebral fissure height), face-frame units. (..., 68, 2) -> (...)."""
    return (q[..., [41, 40], 1] - q[..., [37, 38], 1]).mean(-1)


def _lower_face_length(q: np.ndarray) -> np.ndarray:
    return q[..., 8, 1] - q[..., landmarks.NOSE_TIP, 1]


def _upper_lip_height(q: np.ndarray) -> np.ndarray:
    """Eye line to the upper lip's centre: levator labii superioris's span."""
    return q[..., 51, 1]


@functools.cache
def _template_measures() -> dict[str, float]:
    q = template_unit()
    return dict(
        muscle=float(np.linalg.norm(_cheekbone(q) - q[48])),
        lips=float(_lip_thickness(q)),
        eye=float(_eye_aperture(q)),
        lower_face=float(_lower_face_length(q)),
        upper_lip=float(_upper_lip_height(q)),
    )


def _put(field: np.ndarray, entries: dict[int, tuple[float, float]], gain=1.0) -> None:
    """Add fixed per-point displacements (IOD) times gain (...,) into field (..., 68, 2)."""
    index = np.array(list(entries))
    field[..., index, :] += np.asarray(gain)[..., None, None] * np.array(list(entries.values()))


def _au12_right_local(q: np.ndarray) -> np.ndarray:
    """The right corner's pull on a face-frame shape (..., 68, 2) -> (..., 68, 2)."""
    measures = _template_measures()
    muscle = _cheekbone(q) - q[..., 48, :]
    length = np.linalg.norm(muscle, axis=-1, keepdims=True)
    pull = muscle * (_AU12_REACH / measures["muscle"])  # a fixed share of the muscle's length
    field = np.zeros(q.shape)
    for index, weight in _AU12_UPPER.items():
        field[..., index, :] += weight * pull
    for index, weight in _AU12_LOWER.items():
        field[..., index, 0] += weight * pull[..., 0]
        field[..., index, 1] += weight * _AU12_LOWER_RISE * pull[..., 1]
    _put(field, _AU12_CHEEK, length[..., 0] / measures["muscle"])
    # The red lips thin as the mouth stretches: height x width kept, half the
    # stretch per corner.
    width = np.linalg.norm(q[..., 54, :] - q[..., 48, :], axis=-1)
    stretch = np.abs(pull[..., 0]) / width
    upper = (q[..., [61, 62, 63], 1] - q[..., [50, 51, 52], 1]).mean(-1)
    lower = (q[..., [58, 57, 56], 1] - q[..., [67, 66, 65], 1]).mean(-1)
    for index, weight in _UPPER_VERMILION.items():
        field[..., index, 1] += 0.5 * weight * stretch * upper
    for index, weight in _LOWER_VERMILION.items():
        field[..., index, 1] -= 0.5 * weight * stretch * lower
    # Midline points must not move sideways from one corner's pull.
    field[..., _MIDLINE, 0] = 0.0
    return field


def _au6_right_local(q: np.ndarray) -> np.ndarray:
    """Cheek raise, subject's right half (midline points at full weight). (..., 68, 2)."""
    aperture = _eye_aperture(q)
    field = np.zeros(q.shape)
    field[..., [41, 40], 1] -= AU6_LID_RISE * aperture[..., None]
    for index, share in _AU6_UPPER_LID.items():
        field[..., index, 1] += share * aperture
    _put(field, _AU6_FIXED)
    return field


def _bilateral(one_side, q: np.ndarray) -> np.ndarray:
    """A right-side field function applied to both halves of the face; midline counted once."""
    field = one_side(q) + landmarks.mirror(one_side(landmarks.mirror(q)))
    field[..., _MIDLINE, :] *= 0.5
    return field


def _symmetric_scaled(q: np.ndarray, one_side: dict[int, tuple[float, float]], gain) -> np.ndarray:
    """symmetric_field(one_side) times a per-face gain (...,), shaped like q."""
    field = np.zeros(q.shape)
    _put(field, one_side, gain)
    field = field + landmarks.mirror(field)
    field[..., _MIDLINE, :] *= 0.5
    return field


def _local_basis(q: np.ndarray) -> np.ndarray:
    """AU fields (..., F, 68, 2) of a face-frame shape (..., 68, 2), face-frame units."""
    measures = _template_measures()
    au12_right = _au12_right_local(q)
    au12_left = landmarks.mirror(_au12_right_local(landmarks.mirror(q)))
    au6 = _bilateral(_au6_right_local, q)
    au25 = _symmetric_scaled(q, _AU25, _lip_thickness(q) / measures["lips"])
    au26 = _symmetric_scaled(q, _AU26, _lower_face_length(q) / measures["lower_face"])
    closure = np.zeros(q.shape)
    upper, lower = EYELID_PAIRS[:, 0], EYELID_PAIRS[:, 1]
    closure[..., upper, :] = q[..., lower, :] - q[..., upper, :]
    au10 = _symmetric_scaled(q, _AU10, _upper_lip_height(q) / measures["upper_lip"])
    return np.stack([au12_right, au12_left, au6, au25, au26, closure, au10], -3)


def au_basis(neutral: np.ndarray) -> np.ndarray:
    """The AU displacement fields at intensity 1 for this neutral face.

    neutral: (..., 68, 2) in any similarity frame (face-frame IOD units, crop
    pixels, ...). Returns (..., F, 68, 2) float64 in the same units and frame,
    F = len(AU_FIELDS). Similarity-equivariant: a rotated, scaled, shifted
    face gets the rotated, scaled fields. This is the one definition the
    generator renders with and `cmm_jax.data.synth_fit` fits with.
    """
    neutral = np.asarray(neutral, np.float64)
    if neutral.ndim == 2:  # one face, usually one person's again (every clip of theirs): remembered
        return _one_face_basis(neutral.tobytes())
    q, _, x_axis, scale = face_frame(neutral)
    return _from_face_frame(_local_basis(q), x_axis, scale)


@functools.lru_cache(maxsize=256)
def _one_face_basis(neutral_bytes: bytes) -> np.ndarray:
    """`au_basis` of one face (68, 2) float64, given as bytes; read-only."""
    neutral = np.frombuffer(neutral_bytes, np.float64).reshape(landmarks.NUM_POINTS, 2)
    q, _, x_axis, scale = face_frame(neutral)
    basis = _from_face_frame(_local_basis(q), x_axis, scale)
    basis.flags.writeable = False
    return basis


def template_field(name: str) -> np.ndarray:
    """One of AU_FIELDS on the template, IOD units (68, 2)."""
    return au_basis(template_unit())[AU_FIELDS.index(name)]


def ramp(progress: np.ndarray) -> np.ndarray:
    """Smooth 0 -> 1 ramp (raised cosine) of progress clipped to [0, 1]."""
    return 0.5 - 0.5 * np.cos(np.pi * np.clip(progress, 0.0, 1.0))


def wiggle(params: np.ndarray, times: np.ndarray, num_frames: int) -> np.ndarray:
    """Smooth curves in about [-1, 1], zero at t = 0, from (..., 4) = 2 frequencies, 2 phases. (T, ...)."""
    frequency = params[..., :2] * (2 * np.pi / num_frames)
    phase = params[..., 2:]
    curve = np.sin(times[:, None, None] * frequency + phase) - np.sin(phase)
    return 0.25 * curve.sum(-1).reshape((len(times),) + params.shape[:-1])


def random_wiggle(rng: np.random.Generator, num_frames: int, count: int = 1) -> np.ndarray:
    """`count` random smooth curves in about [-1, 1], zero at frame 0. (T, count)."""
    frequency = rng.uniform(0.5, 1.5, size=(count, 2))
    phase = rng.uniform(0, 2 * np.pi, size=(count, 2))
    return wiggle(np.concatenate([frequency, phase], -1), np.arange(num_frames, dtype=np.float64), max(num_frames, 2))


# Expressions of the fake videos, on the template (`cmm_jax.data.fake`).


def _brow_raise() -> np.ndarray:
    """AU1+2: whole brows up, upper lids follow a little."""
    return symmetric_field({17: (-0.01, -0.07), 18: (0.0, -0.09), 19: (0.0, -0.10), 20: (0.0, -0.10),
                             21: (0.0, -0.09), 37: (0.0, -0.012), 38: (0.0, -0.012)})


def _inner_brow_raise() -> np.ndarray:
    """AU1: inner brows up (sadness)."""
    return symmetric_field({21: (0.0, -0.07), 20: (0.0, -0.05), 19: (0.0, -0.025)})


def _brow_lower() -> np.ndarray:
    """AU4: brows down and drawn together."""
    return symmetric_field({17: (0.0, 0.02), 18: (0.0, 0.04), 19: (0.01, 0.05), 20: (0.02, 0.05),
                             21: (0.03, 0.045), 37: (0.0, 0.01), 38: (0.0, 0.01)})


def _lid_raise() -> np.ndarray:
    """AU5: upper lids up (eyes widen)."""
    return symmetric_field({37: (0.0, -0.025), 38: (0.0, -0.025)})


def _lip_corner_depress() -> np.ndarray:
    """AU15: lip corners down."""
    return symmetric_field({48: (-0.01, 0.05), 60: (-0.005, 0.04), 49: (0.0, 0.025), 59: (0.0, 0.02),
                             67: (0.0, 0.012)})


def _lip_press() -> np.ndarray:
    """AU23/24: lips narrowed and pressed together."""
    return symmetric_field({48: (0.03, 0.0), 60: (0.025, 0.0), 49: (0.015, 0.01), 61: (0.01, 0.006),
                             59: (0.015, -0.01), 67: (0.01, -0.006), 50: (0.0, 0.01), 51: (0.0, 0.01),
                             57: (0.0, -0.01), 58: (0.0, -0.01)})


def _nose_wrinkle() -> np.ndarray:
    """AU9+10: nose wings and upper lip up, inner brows a little down."""
    return symmetric_field({31: (0.005, -0.03), 32: (0.0, -0.03), 33: (0.0, -0.025), 30: (0.0, -0.01),
                             48: (0.0, -0.01), 49: (0.0, -0.025), 50: (0.0, -0.04), 51: (0.0, -0.04),
                             61: (0.0, -0.03), 62: (0.0, -0.035), 20: (0.0, 0.02), 21: (0.01, 0.03)})


def _lip_stretch() -> np.ndarray:
    """AU20: lip corners pulled sideways (fear)."""
    return symmetric_field({48: (-0.06, 0.01), 60: (-0.05, 0.01), 49: (-0.03, 0.0), 59: (-0.03, 0.0),
                             61: (-0.02, 0.0), 67: (-0.02, 0.0), 4: (-0.01, 0.0), 5: (-0.005, 0.0)})


@functools.cache
def expression_fields() -> dict[str, np.ndarray]:
    """Every field `expression_path` mixes, on the template, IOD units (68, 2), read-only."""
    right = template_field("au12_right")
    fields = dict(
        au12_right=right, au12_left=landmarks.mirror(right), au6=template_field("au6"),
        au25=template_field("au25"), au26=template_field("au26"), brow_raise=_brow_raise(),
        inner_brow_raise=_inner_brow_raise(), brow_lower=_brow_lower(), lid_raise=_lid_raise(),
        lip_corner_depress=_lip_corner_depress(), lip_press=_lip_press(),
        nose_wrinkle=_nose_wrinkle(), lip_stretch=_lip_stretch(),
    )
    for field in fields.values():
        field.setflags(write=False)
    return fields


# Apex intensity of each field, per kind. The smile's AU12 sides are split
# (and made asymmetric for posed smiles) in `expression_path`.
_APEX = {
    "posed": dict(au12=1.15, au6=0.15, au25=0.9),
    "spontaneous": dict(au12=0.85, au6=1.1, au25=0.5),
    "neutral": dict(),
    "happiness": dict(au12=1.0, au6=0.8, au25=0.5),
    "surprise": dict(brow_raise=1.0, lid_raise=1.0, au26=0.45, au25=0.5),
    "anger": dict(brow_lower=1.2, lid_raise=0.6, lip_press=1.0),
    "disgust": dict(nose_wrinkle=1.3, brow_lower=0.5, lip_corner_depress=0.6),
    "fear": dict(brow_raise=0.7, brow_lower=0.4, lid_raise=1.0, lip_stretch=1.0, au25=0.6),
    "sadness": dict(inner_brow_raise=1.3, brow_lower=0.3, lip_corner_depress=1.3),
}
# Envelope phases in seconds: (neutral hold, onset, apex, offset). Posed smiles
# rise fast; spontaneous ones rise slowly and hold longer (Schmidt et al. 2006).
_TIMING = {
    "posed": (0.1, 0.3, 1.0, 0.5),
    "spontaneous": (0.1, 0.8, 1.6, 1.0),
}
_EMOTION_TIMING = (0.1, 0.6, 1.0, 0.6)
# Posed smiles pull one lip corner harder: strong / weak side intensity.
POSED_ASYMMETRY = 1.3


def envelope(kind: str, num_frames: int, fps: float, rng: np.random.Generator) -> np.ndarray:
    """Expression intensity per frame, 0 at frame 0, about 1 at the apex. (T,).

    The phases of `_TIMING` (jittered by 15 %) are squeezed uniformly when they
    do not fit the clip, so a short clip still shows the whole expression and
    posed onsets stay faster than spontaneous ones.
    """
    phases = np.array(_TIMING.get(kind, _EMOTION_TIMING)) * rng.uniform(0.85, 1.15, size=4)
    phases *= min(1.0, (num_frames / fps) / phases.sum())
    hold, onset, apex, offset = phases * fps  # frames
    hold = max(hold, 1.0)
    times = np.arange(num_frames, dtype=np.float64)
    curve = ramp((times - hold) / onset) - ramp((times - hold - onset - apex) / offset)
    curve[0] = 0.0
    return curve


def expression_path(kind: str, num_frames: int, fps: float, seed: int = 0) -> np.ndarray:
    """Displacements from the neutral shape, IOD units, float64 (T, 68, 2).

    kind: one of KINDS ("posed", "spontaneous", "neutral" or a MUG emotion).
    Frame 0 is exactly zero (neutral face); then onset, apex and offset with
    the dynamics of the kind. Amplitudes are 0.05 - 0.15 IOD per point.
    """
    if kind not in _APEX:
        raise ValueError(f"unknown expression kind {kind!r}; expected one of {KINDS}")
    rng = np.random.default_rng([seed, KINDS.index(kind)])
    curve = envelope(kind, num_frames, fps, rng)
    apex = dict(_APEX[kind])
    if "au12" in apex:
        au12 = apex.pop("au12")
        ratio = POSED_ASYMMETRY if kind == "posed" else 1.0
        strong, weak = au12 * np.sqrt(ratio), au12 / np.sqrt(ratio)
        right_strong = rng.random() < 0.5
        apex["au12_right"], apex["au12_left"] = (strong, weak) if right_strong else (weak, strong)
    fields = expression_fields()
    shape = np.zeros((landmarks.NUM_POINTS, 2))
    for name, intensity in apex.items():
        shape += intensity * rng.uniform(0.9, 1.1) * fields[name]
    # The apex is not frozen: a small fluctuation where the expression is on.
    wobble = 1.0 + 0.05 * random_wiggle(rng, num_frames)[:, 0] * curve
    return (curve * wobble)[:, None, None] * shape[None]
