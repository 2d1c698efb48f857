"""Files in and out: photos read and checked, PNG/GIF/MP4 written, every
write atomic, so that a reader never sees half of one."""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import uuid
import warnings

import imageio.v3 as iio
import imageio_ffmpeg
import numpy as np
from skimage import data

from cmm_jax.errors import UserError

# Names of the temporary files write_atomically makes (".<name>.<8 hex>.tmp<suffix>").
TEMPORARY = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp(\.[^.]+)?$")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
# Below this the face is too small for dlib and for a useful crop; above it
# decoding alone needs gigabytes.
MIN_IMAGE_SIDE = 48
MAX_IMAGE_PIXELS = 100_000_000


def write_atomically(path, write) -> None:
    """Call write(temporary_path), then rename the result to `path`.

    The temporary file is in the same folder (so the rename is atomic) and has
    the same suffix (so writers that pick a format by suffix, or add one, keep
    it). A failure or interruption removes it and leaves `path` as it was.
    write may make a folder there instead: it replaces a folder at `path`
    whole, the old one removed only after the rename.
    """
    path = os.path.abspath(os.fspath(path))
    folder, name = os.path.split(path)
    os.makedirs(folder, exist_ok=True)
    # The writer creates the temporary file itself, so it gets the usual permissions.
    temporary = os.path.join(folder, f".{name}.{uuid.uuid4().hex[:8]}.tmp{os.path.splitext(name)[1]}")
    try:
        write(temporary)
        if os.path.isdir(temporary) and os.path.isdir(path):
            os.replace(path, temporary + ".old")
            os.replace(temporary, path)
            shutil.rmtree(temporary + ".old", ignore_errors=True)
        else:
            os.replace(temporary, path)
    except BaseException:
        if os.path.isdir(temporary):
            shutil.rmtree(temporary, ignore_errors=True)
        elif os.path.exists(temporary):
            os.remove(temporary)
        raise


def write_bytes_atomically(path, content: bytes) -> None:
    def write(temporary):
        with open(temporary, "wb") as f:
            f.write(content)

    write_atomically(path, write)


@functools.cache
def _astronaut() -> np.ndarray:
    image = data.astronaut()
    image.setflags(write=False)
    return image


def astronaut() -> np.ndarray:
    """scikit-image's astronaut, uint8 (512, 512, 3), read-only: the photo the
    template comes from and the default face of demos and fakes."""
    return _astronaut()


def read_photo(path: str) -> np.ndarray:
    """uint8 (H, W, 3) RGB, or UserError saying in one line what is wrong."""
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such file")
    try:
        properties = iio.improps(path)
        if int(np.prod(properties.shape[:2])) > MAX_IMAGE_PIXELS:
            raise UserError(f"{path}: {properties.shape[1]}x{properties.shape[0]} pixels is more than "
                            f"{MAX_IMAGE_PIXELS // 1_000_000} megapixels; shrink it first")
        image = iio.imread(path)
    except UserError:
        raise
    except Exception as e:  # imageio/Pillow raise many types for a bad file
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{path}: not a readable image ({reason})") from e
    if image.ndim == 4:  # an animation: its first frame
        image = image[0]
    if image.ndim == 2 or (image.ndim == 3 and image.shape[-1] == 1):
        raise UserError(f"{path}: grayscale image; the models are trained on colour photos, give an RGB one")
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise UserError(f"{path}: unsupported image layout {image.shape}")
    if image.shape[-1] == 4:
        raise UserError(f"{path}: image has an alpha channel (RGBA); flatten it to RGB first")
    if image.dtype != np.uint8:
        raise UserError(f"{path}: {image.dtype} pixels; give an 8-bit RGB photo")
    if min(image.shape[:2]) < MIN_IMAGE_SIDE:
        raise UserError(f"{path}: {image.shape[1]}x{image.shape[0]} pixels is too small to find a face "
                        f"(at least {MIN_IMAGE_SIDE} px a side)")
    return image


def photos_in(folder: str) -> list[str]:
    """The image files of a folder, sorted; UserError when there are none."""
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_SUFFIXES) and not n.startswith("."))
    if not names:
        raise UserError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return [os.path.join(folder, n) for n in names]


@contextlib.contextmanager
def ffmpeg_subprocess():
    """Starting ffmpeg: imageio-ffmpeg forks and execs at once, so JAX's
    warning about fork in a threaded process does not apply."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="os.fork", category=RuntimeWarning)
        yield


def write_png(path, image: np.ndarray) -> None:
    """Write uint8 (H, W, 3) as PNG, atomically."""
    image = np.asarray(image, np.uint8)
    write_atomically(path, lambda temporary: iio.imwrite(temporary, image, extension=".png"))


def write_jpeg(path, image: np.ndarray, quality: int = 85) -> None:
    """Write uint8 (H, W, 3) as JPEG (figures for documents), atomically."""
    image = np.asarray(image, np.uint8)
    write_atomically(path, lambda temporary: iio.imwrite(temporary, image, extension=".jpeg", quality=quality))


def write_mp4(path: str, frames, fps: float, crf: int | None = None) -> None:
    """H.264 mp4 in yuv420p of uint8 (H, W, 3) frames (an array or an iterable,
    streamed to ffmpeg). yuv420p needs even sizes: an odd height or width is
    padded by repeating the last row or column. crf: the quality (0 lossless
    .. 51 worst), None for ffmpeg's default."""
    writer = None
    try:
        for frame in frames:
            frame = np.asarray(frame, np.uint8)
            if frame.shape[0] % 2 or frame.shape[1] % 2:
                frame = np.pad(frame, ((0, frame.shape[0] % 2), (0, frame.shape[1] % 2), (0, 0)), mode="edge")
            frame = np.ascontiguousarray(frame)
            if writer is None:
                height, width = frame.shape[:2]
                with ffmpeg_subprocess():
                    writer = imageio_ffmpeg.write_frames(
                        path, (width, height), fps=fps, codec="libx264", pix_fmt_out="yuv420p", quality=None,
                        macro_block_size=1, ffmpeg_log_level="error",
                        output_params=[] if crf is None else ["-crf", str(crf)])
                    writer.send(None)
            writer.send(frame)
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        raise ValueError("no frames to write")


def write_video(path, frames: np.ndarray, fps: float = 8) -> None:
    """Write uint8 frames (T, H, W, 3) as `.gif` or `.mp4` (by suffix), atomically."""
    frames = np.asarray(frames, np.uint8)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3), got {frames.shape}")
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix == ".gif":
        def write(temporary):
            iio.imwrite(temporary, frames, extension=".gif", plugin="pillow", duration=1000.0 / fps, loop=0)
    elif suffix == ".mp4":
        def write(temporary):
            write_mp4(temporary, frames, fps)
    else:
        raise ValueError(f"unknown video suffix {suffix!r}: use .gif or .mp4")
    write_atomically(path, write)
