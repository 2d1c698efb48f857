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


def smile_strength(points: np.ndarray, window: str = "apex") -> np.ndarray:
    """How much the mouth widens: (..., T, 68, 2) -> (...,).

    Mouth width (48-54) over inter-ocular distance, averaged over a window of
    frames, divided by the same ratio at frame 0: 1 for no change, 1.2 for a
    mouth 20 % wider. window "apex": the max(1, (T - 1) // 4) frames after
    frame 0 where the ratio is largest; "last_third": the last max(1, T // 3)
    frames (DESIGN §7; a clip whose smile ends inside it scores ~1 there, as
    smile_synth's own clips do). NaN points give NaN.
    """
    points = np.asarray(points, np.float64)
    mouth = points[..., landmarks.MOUTH_LEFT, :] - points[..., landmarks.MOUTH_RIGHT, :]
    ratio = np.sqrt((mouth**2).sum(-1)) / landmarks.inter_ocular_distance(points)  # (..., T)
    num_frames = ratio.shape[-1]
    if window == "apex":
        count = max(1, int((num_frames - 1) * APEX_FRACTION))
        value = np.sort(ratio[..., 1:], axis=-1)[..., num_frames - 1 - count:].mean(-1)  # NaN sorts last
    elif window == "last_third":
        value = ratio[..., num_frames - max(1, num_frames // 3):].mean(-1)
    else:
        raise ValueError(f"window must be 'apex' or 'last_third', got {window!r}")
    return value / ratio[..., 0]


def video_metrics(frames: np.ndarray, claimed_points: np.ndarray, reference_image: np.ndarray) -> dict[str, float]:
    """All video metrics of K videos generated from one input face.

    frames: uint8 (K, T, H, W, 3); claimed_points: (K, T, 68, 2) in frame
    pixels; reference_image: uint8 (H', W', 3), the input face. Every frame
    goes through dlib once. Returns floats:
    detection_rate, landmark_nme, identity_distance, identity_same_rate (see
    `landmark_fidelity` and `identity_distance`);
    smile_strength_min_redetected: the smallest apex `smile_strength` over
    the K videos on dlib's points, NaN when any video lacks a face in a frame
    that counts; smile_strength_min_claimed: the same on the claimed points;
    smile_strength_last_third_min_redetected: the DESIGN §7 window; apd_claimed: mean pairwise distance between the K claimed
    sequences over the inter-ocular distance of the first video's frame 0
    (NaN for K < 2).
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
    }
