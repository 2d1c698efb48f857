"""Metrics of generated face videos, measured by dlib, not by the generator.

The generator claims a landmark sequence for every video it renders; these
metrics ask an independent judge (dlib's HOG face detector, its 68-point shape
predictor and its face-recognition network) what the frames actually show:

- detection rate and landmark NME: is there a face, and where the generator
  says its points are;
- identity distance (ACD/AED-style): is it still the input person, by the
  Euclidean distance between dlib's 128-d face descriptors (dlib's
  same-person threshold is SAME_PERSON_DISTANCE);
- smile strength: does the mouth widen, on dlib's points and on the claimed
  ones;
- render fidelity: how much of the claimed widening and opening of the mouth
  dlib sees in the frames, and how much dlib's points jump from frame to
  frame beyond the claimed motion (flicker);
- APD of the claimed landmark sequences: are the K videos different.

Frames are uint8 RGB (H, W, 3), typically 64 x 64 aligned crops with a face
about 40 px wide, which the HOG detector cannot find as is. Every dlib
measurement therefore first upsamples the frame by the smallest integer
factor that makes its short side at least DETECTION_SIZE (`upsample`:
skimage.transform.resize, bicubic, order=3, no anti-aliasing), runs dlib
there and maps the points back to frame pixels. Pixel coordinates address
pixel centres (as in `cmm_jax.landmarks`), so the map is
frame = (upsampled + 0.5) / factor - 0.5, not a plain division (which would
shift every point by (factor - 1) / (2 factor) px, 0.375 px at factor 4).
"""

from __future__ import annotations

import numpy as np
from skimage import transform

from cmm_jax import face, landmarks
from cmm_jax.metrics import pairwise_distance

DETECTION_SIZE = 256
# dlib's threshold: descriptors of one person are closer than this.
SAME_PERSON_DISTANCE = 0.6


def upsampling_factor(shape: tuple[int, ...]) -> int:
    """Smallest integer factor taking the short side of an (H, W, ...) image to >= DETECTION_SIZE."""
    return max(1, -(-DETECTION_SIZE // min(shape[:2])))


def upsample(image: np.ndarray) -> tuple[np.ndarray, int]:
    """The image dlib runs on, and the factor. uint8 (H, W, 3) -> uint8 (H f, W f, 3), f.

    Bicubic (skimage.transform.resize, order=3, anti_aliasing=False, edge mode).
    """
    factor = upsampling_factor(image.shape)
    if factor == 1:
        return np.asarray(image), 1
    height, width = image.shape[:2]
    big = transform.resize(
        image, (height * factor, width * factor), order=3, mode="edge",
        anti_aliasing=False, preserve_range=True,
    )
    return np.clip(np.round(big), 0, 255).astype(np.uint8), factor


def to_frame_pixels(points: np.ndarray, factor: int) -> np.ndarray:
    """Upsampled-image pixel coordinates -> frame pixel coordinates (pixel centres)."""
    return (points + 0.5) / factor - 0.5


def to_upsampled_pixels(points: np.ndarray, factor: int) -> np.ndarray:
    """Frame pixel coordinates -> upsampled-image pixel coordinates (pixel centres)."""
    return (points + 0.5) * factor - 0.5


def _upsampled_landmarks(big: np.ndarray) -> np.ndarray | None:
    """dlib's 68 points of the largest face in an upsampled image, or None."""
    try:
        return face.detect_landmarks(big)
    except face.NoFaceError:
        return None


def redetect(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """dlib's 68 points of the largest face in each frame, found on the upsampled frame.

    frames: uint8 (N, H, W, 3) -> found bool (N,), points float32 (N, 68, 2)
    in frame pixels, NaN where no face was found.
    """
    found = np.zeros(len(frames), bool)
    points = np.full((len(frames), landmarks.NUM_POINTS, 2), np.nan, np.float32)
    for i, frame in enumerate(frames):
        big, factor = upsample(frame)
        big_points = _upsampled_landmarks(big)
        if big_points is not None:
            found[i] = True
            points[i] = to_frame_pixels(big_points, factor)
    return found, points


def _fidelity(found: np.ndarray, points: np.ndarray, claimed_points: np.ndarray) -> dict:
    """`landmark_fidelity` from detections already made."""
    nme = (
        landmarks.point_error(points, claimed_points).mean(-1)
        / landmarks.inter_ocular_distance(claimed_points)
    )
    return {
        "detection_rate": float(found.mean()),
        "nme": float(nme[found].mean()) if found.any() else float("nan"),
        "nme_per_frame": nme,
    }


def landmark_fidelity(frames: np.ndarray, claimed_points: np.ndarray) -> dict:
    """Does dlib find a face in each frame, and the points the generator claims?

    frames: uint8 (N, H, W, 3); claimed_points: (N, 68, 2) in frame pixels.
    Returns detection_rate (share of frames with a face), nme (mean over
    those frames of the mean point distance between dlib's and the claimed
    points over the claimed points' inter-ocular distance; NaN when no face
    was found) and nme_per_frame (N,), NaN where no face was found.
    """
    found, points = redetect(frames)
    return _fidelity(found, points, np.asarray(claimed_points, np.float32))


def embed(image: np.ndarray, points: np.ndarray | None = None) -> np.ndarray | None:
    """dlib's 128-d descriptor float32 (128,) of the largest face, or None when there is no face.

    The descriptor's chip is cut from the upsampled image (`upsample`), so
    small frames and large photos are compared at a similar resolution of
    the face. image: uint8 (H, W, 3). points: (68, 2) in image pixels to
    align by (e.g. from `redetect`), or None to fit them with dlib here.
    """
    big, factor = upsample(image)
    if points is None:
        big_points = _upsampled_landmarks(big)
    elif np.isfinite(points).all():
        big_points = to_upsampled_pixels(np.asarray(points, np.float64), factor)
    else:
        big_points = None
    return None if big_points is None else face.descriptor(big, big_points)


def _identity(frames: np.ndarray, found: np.ndarray, points: np.ndarray, reference_image: np.ndarray) -> dict:
    """`identity_distance` from detections already made."""
    reference = embed(reference_image)
    if reference is None:
        raise face.NoFaceError("no face found in the reference image")
    distance = np.full(len(frames), np.nan, np.float32)
    for i in np.flatnonzero(found):
        distance[i] = np.linalg.norm(embed(frames[i], points[i]) - reference)
    same = found & (np.where(found, distance, np.inf) < SAME_PERSON_DISTANCE)
    return {
        "identity_distance": float(distance[found].mean()) if found.any() else float("nan"),
        "identity_same_rate": float(same.mean()),
        "distance_per_frame": distance,
    }


def identity_distance(frames: np.ndarray, reference_image: np.ndarray) -> dict:
    """Is each frame still the person of the reference image? (ACD/AED-style.)

    frames: uint8 (N, H, W, 3); reference_image: uint8 (H', W', 3), any size
    (the input face). Returns identity_distance (mean descriptor distance
    over frames with a face; NaN when none has), identity_same_rate (share of
    ALL frames closer than SAME_PERSON_DISTANCE: frames without a face count
    as failures) and distance_per_frame (N,), NaN where no face was found.
    Raises face.NoFaceError when the reference image has no face.
    """
    found, points = redetect(frames)
    return _identity(frames, found, points, reference_image)


# The apex of a smile: the frames (this share of them) where the mouth is widest.
APEX_FRACTION = 0.25
# Inner-lip points whose means give the mouth opening (upper: 61-63, lower: 65-67).
UPPER_INNER_LIP = (61, 62, 63)
LOWER_INNER_LIP = (65, 66, 67)
# A video whose claimed change is smaller than this is left out of a render
# fidelity (the ratio of two near-zero changes says nothing): widening as
# apex width ratio - 1, opening in inter-ocular distances.
MIN_CLAIMED_WIDENING = 0.01
MIN_CLAIMED_OPENING = 0.01


def mouth_opening(points: np.ndarray) -> np.ndarray:
    """How far the lips part: (..., 68, 2) -> (...), in inter-ocular distances.

    The distance between the mean of the upper inner lip's three middle points
    (61-63) and the mean of the lower inner lip's (65-67), over the distance
    between the outer eye corners. Three points each, not the midpoints 62/66
    alone, so one misplaced point moves it a third as much. ~0 for closed
    lips. NaN points give NaN.
    """
    points = np.asarray(points, np.float64)
    gap = points[..., UPPER_INNER_LIP, :].mean(-2) - points[..., LOWER_INNER_LIP, :].mean(-2)
    return np.sqrt((gap**2).sum(-1)) / landmarks.inter_ocular_distance(points)


def apex_frames(width_ratio: np.ndarray) -> np.ndarray:
    """The frames of a smile's apex: (..., T) per-frame mouth width ratios -> int (..., count).

    The count = max(1, (T - 1) // 4) frames after frame 0 where the ratio is
    largest (in no particular order). NaN sorts as the largest, so a NaN
    ratio is taken first and makes the apex NaN.
    """
    num_frames = width_ratio.shape[-1]
    count = max(1, int((num_frames - 1) * APEX_FRACTION))
    return np.argsort(width_ratio[..., 1:], axis=-1)[..., num_frames - 1 - count:] + 1


def _at(values: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """Mean of values (..., T) over frames int (..., count) -> (...)."""
    return np.take_along_axis(values, frames, -1).mean(-1)


def smile_strength(points: np.ndarray, window: str = "apex") -> np.ndarray:
    """How much the mouth widens: (..., T, 68, 2) -> (...,).

    `landmarks.mouth_width_ratio` averaged over a window of frames, divided by the same
    ratio at frame 0: 1 for no change, 1.2 for a mouth 20 % wider. window
    "apex": the `apex_frames`, the max(1, (T - 1) // 4) frames after frame 0
    where the ratio is largest; "last_third": the last max(1, T // 3) frames
    (the window first planned; a clip whose smile ends inside it scores ~1 there, as
    smile_synth's own clips do). NaN points give NaN.
    """
    ratio = landmarks.mouth_width_ratio(points)  # (..., T)
    num_frames = ratio.shape[-1]
    if window == "apex":
        value = _at(ratio, apex_frames(ratio))
    elif window == "last_third":
        value = ratio[..., num_frames - max(1, num_frames // 3):].mean(-1)
    else:
        raise ValueError(f"window must be 'apex' or 'last_third', got {window!r}")
    return value / ratio[..., 0]


def _finite_mean(values: np.ndarray) -> float:
    """Mean of the finite values; NaN when there are none."""
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else float("nan")


def _at_found(values: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """Mean of values (..., T) over the finite ones among frames int (..., count) -> (...); NaN if none is."""
    picked = np.take_along_axis(values, frames, -1)
    found = np.isfinite(picked)
    with np.errstate(invalid="ignore"):  # 0 / 0: no frame found
        return np.where(found, picked, 0.0).sum(-1) / found.sum(-1)


def _change_ratio(measured: np.ndarray, claimed: np.ndarray, threshold: float) -> np.ndarray:
    """measured / claimed change per video (K,); NaN where |claimed| < threshold or measured is NaN."""
    kept = np.abs(claimed) >= threshold
    return np.where(kept, measured / np.where(kept, claimed, 1.0), np.nan)


def render_fidelity(redetected: np.ndarray, claimed: np.ndarray) -> dict[str, float | int]:
    """How much of the claimed mouth motion dlib sees in the frames.

    redetected: dlib's points (K, T, 68, 2), NaN where no face was found;
    claimed: the generator's points (K, T, 68, 2), same pixels. In each
    video the apex is chosen on the CLAIMED points (`apex_frames` of their
    `landmarks.mouth_width_ratio`), and both point sets are read at those frames
    (dlib's: the apex frames where it found a face). Returns floats (the
    two _left_out counts are ints):

    - apex_mouth_width_ratio / _claimed: the mean over videos of the apex
      width ratio (`landmarks.mouth_width_ratio` at the apex over frame 0's; 1: no
      widening) on dlib's / the claimed points (dlib's: over the videos with
      a face in frame 0 and in an apex frame);
    - apex_mouth_opening / _claimed: the same for the apex `mouth_opening`
      minus frame 0's, in inter-ocular distances;
    - render_fidelity_widening: the mean over videos of (measured apex width
      ratio - 1) / (claimed apex width ratio - 1); 1: the frames show all
      the widening, 0: none of it;
    - render_fidelity_opening: the same for the opening change;
    - render_fidelity_widening_left_out, render_fidelity_opening_left_out:
      how many videos are not in that mean, because their claimed change is
      below MIN_CLAIMED_WIDENING / MIN_CLAIMED_OPENING or dlib found no face
      in frame 0 or in every apex frame. All left out: NaN.
    """
    claimed_width = landmarks.mouth_width_ratio(claimed)  # (K, T)
    apex = apex_frames(claimed_width)  # (K, count)
    measured_width = landmarks.mouth_width_ratio(redetected)
    claimed_opening, measured_opening = mouth_opening(claimed), mouth_opening(redetected)
    claimed_widening = _at_found(claimed_width, apex) / claimed_width[:, 0]
    measured_widening = _at_found(measured_width, apex) / measured_width[:, 0]
    claimed_opening_change = _at_found(claimed_opening, apex) - claimed_opening[:, 0]
    measured_opening_change = _at_found(measured_opening, apex) - measured_opening[:, 0]
    widening = _change_ratio(measured_widening - 1.0, claimed_widening - 1.0, MIN_CLAIMED_WIDENING)
    opening = _change_ratio(measured_opening_change, claimed_opening_change, MIN_CLAIMED_OPENING)
    return {
        "apex_mouth_width_ratio": _finite_mean(measured_widening),
        "apex_mouth_width_ratio_claimed": float(claimed_widening.mean()),
        "apex_mouth_opening": _finite_mean(measured_opening_change),
        "apex_mouth_opening_claimed": float(claimed_opening_change.mean()),
        "render_fidelity_widening": _finite_mean(widening),
        "render_fidelity_widening_left_out": int(np.isnan(widening).sum()),
        "render_fidelity_opening": _finite_mean(opening),
        "render_fidelity_opening_left_out": int(np.isnan(opening).sum()),
    }


def landmark_jumps(redetected: np.ndarray, claimed: np.ndarray) -> np.ndarray:
    """dlib's frame-to-frame point motion that the claimed points do not have.

    redetected, claimed: (..., T, 68, 2) in the same pixels (redetected NaN
    where no face was found) -> (..., T - 1, 68): for frames t, t + 1 and
    each point, the length of (dlib's displacement - the claimed
    displacement), over the claimed inter-ocular distance at frame t. Real
    motion cancels; what is left is dlib jitter and frames that flicker.
    NaN where dlib missed either frame.
    """
    redetected, claimed = np.asarray(redetected, np.float64), np.asarray(claimed, np.float64)
    residual = np.diff(redetected, axis=-3) - np.diff(claimed, axis=-3)
    return np.sqrt((residual**2).sum(-1)) / landmarks.inter_ocular_distance(claimed[..., :-1, :, :])[..., None]


def jump_statistics(redetected: np.ndarray, claimed: np.ndarray) -> dict[str, float]:
    """landmark_jump_p99 and landmark_jump_max: the 99th percentile and the
    largest of `landmark_jumps` over every point, consecutive frame pair
    (both with a face) and video, inter-ocular distances; NaN when no pair of
    consecutive frames has a face. Shapes as in `landmark_jumps`."""
    jumps = landmark_jumps(redetected, claimed)
    jumps = jumps[np.isfinite(jumps)]
    if not jumps.size:
        return {"landmark_jump_p99": float("nan"), "landmark_jump_max": float("nan")}
    return {"landmark_jump_p99": float(np.percentile(jumps, 99)), "landmark_jump_max": float(jumps.max())}


def video_metrics(frames: np.ndarray, claimed_points: np.ndarray,
                  reference_image: np.ndarray) -> dict[str, float | int]:
    """All video metrics of K videos generated from one input face.

    frames: uint8 (K, T, H, W, 3); claimed_points: (K, T, 68, 2) in frame
    pixels; reference_image: uint8 (H', W', 3), the input face. Every frame
    goes through dlib once. Returns floats:
    detection_rate, landmark_nme, identity_distance, identity_same_rate (see
    `landmark_fidelity` and `identity_distance`);
    smile_strength_min_redetected: the smallest apex `smile_strength` over
    the K videos on dlib's points, NaN when any video lacks a face in a frame
    that counts; smile_strength_min_claimed: the same on the claimed points;
    smile_strength_last_third_min_redetected: the last-third window;
    apd_claimed: mean pairwise distance between the K claimed sequences over
    the inter-ocular distance of the first video's frame 0 (NaN for K < 2);
    the render fidelity and apex measures of `render_fidelity` (its two
    _left_out counts are ints); landmark_jump_p99 and landmark_jump_max
    (`jump_statistics`).
    """
    frames = np.asarray(frames)
    claimed_points = np.asarray(claimed_points, np.float32)
    num_videos, num_frames = frames.shape[:2]
    flat_frames = frames.reshape(-1, *frames.shape[2:])
    flat_claimed = claimed_points.reshape(-1, *claimed_points.shape[2:])
    found, points = redetect(flat_frames)
    fidelity = _fidelity(found, points, flat_claimed)
    identity = _identity(flat_frames, found, points, reference_image)
    redetected = points.reshape(num_videos, num_frames, *points.shape[1:])
    if num_videos > 1:
        apd = float(pairwise_distance(claimed_points, landmarks.inter_ocular_distance(claimed_points[0, 0])))
    else:
        apd = float("nan")
    return {
        "detection_rate": fidelity["detection_rate"],
        "landmark_nme": fidelity["nme"],
        "identity_distance": identity["identity_distance"],
        "identity_same_rate": identity["identity_same_rate"],
        "smile_strength_min_redetected": float(smile_strength(redetected).min()),
        "smile_strength_min_claimed": float(smile_strength(claimed_points).min()),
        "smile_strength_last_third_min_redetected": float(smile_strength(redetected, "last_third").min()),
        "apd_claimed": apd,
        **render_fidelity(redetected, claimed_points),
        **jump_statistics(redetected, claimed_points),
    }
