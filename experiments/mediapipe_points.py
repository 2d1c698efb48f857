"""MediaPipe Face Mesh's points on frames: the second instrument of render fidelity.

    python experiments/mediapipe_points.py IN.npz OUT.npz

Reads `frames`, uint8 (K, T, S, S, 3), from IN.npz and writes to OUT.npz
`static` and `video`, float64 (K, T, 468, 2): the mesh's 468 points in frame
pixels, NaN where no face was found. MediaPipe's normalised coordinates are
taken to run from the image's left (top) edge, 0, to its right (bottom) edge,
1, and are put in this project's pixels, whose centres are at integers; a
half-pixel error there would shift every point alike, which no measure here
depends on.
`static` reads each frame on its own, as dlib is read; `video` reads each of
the K videos as a stream, the mesh tracking the face from frame to frame
(MediaPipe's video mode). One face at most, no iris refinement.

This script imports only NumPy and MediaPipe, and runs under a Python of its
own: MediaPipe 0.10.14 wants protobuf < 5, which the project's environment
does not have. `experiments.render_fidelity --mediapipe_python=PATH` calls it
(BUILD.md, "A second instrument"). MediaPipe's wheel carries the Face Mesh
model, so nothing is downloaded when it runs.
"""

import sys

import mediapipe as mp
import numpy as np

NUM_POINTS = 468
MIN_DETECTION_CONFIDENCE = 0.5  # MediaPipe's default


def mesh_points(videos: np.ndarray, static: bool) -> np.ndarray:
    """(K, T, S, S, 3) uint8 -> (K, T, 468, 2) frame pixels, NaN where no face was found."""
    points = np.full(videos.shape[:2] + (NUM_POINTS, 2), np.nan)
    height, width = videos.shape[2:4]
    for k, video in enumerate(videos):
        with mp.solutions.face_mesh.FaceMesh(static_image_mode=static, max_num_faces=1,
                                             min_detection_confidence=MIN_DETECTION_CONFIDENCE) as mesh:
            for t, frame in enumerate(video):
                found = mesh.process(np.ascontiguousarray(frame)).multi_face_landmarks
                if found:
                    # Normalised [0, 1] edge-to-edge coordinates -> pixel centres at integers.
                    points[k, t] = [[p.x * width - 0.5, p.y * height - 0.5] for p in found[0].landmark]
    return points


def main(argv):
    if len(argv) != 3:
        sys.exit("usage: python experiments/mediapipe_points.py IN.npz OUT.npz")
    with np.load(argv[1]) as given:
        videos = given["frames"]
    np.savez(argv[2], static=mesh_points(videos, static=True), video=mesh_points(videos, static=False))


if __name__ == "__main__":
    main(sys.argv)
