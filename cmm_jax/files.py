"""Files in and out: photos read and checked, PNG/GIF/MP4 written, every
write atomic, so that a reader never sees half of one."""

from __future__ import annotations

import concurrent.futures
import contextlib
import fractions
import functools
import json
import os
import re
import shutil
import uuid
import warnings
import zipfile

import av
import imageio.v3 as iio
import numpy as np
import pillow_heif
from PIL import Image
from skimage import data

from cmm_jax.errors import UserError

# Names of the temporary files write_atomically makes (".<name>.<8 hex>.tmp<suffix>").
TEMPORARY = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp(\.[^.]+)?$")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".heic", ".heif")
pillow_heif.register_heif_opener()  # Pillow, and so read_photo, reads HEIC/HEIF (iPhones' photos)
# Below this the face is too small for dlib and for a useful crop; above it
# decoding alone needs gigabytes.
MIN_IMAGE_SIDE = 48
MAX_IMAGE_PIXELS = 100_000_000
# A GIF's palette comes from this many of its frames, spread over it (`write_gif`).
PALETTE_FRAMES = 8


def write_atomically(path, write) -> None:
    """Call write(temporary_path), then rename the result to `path`.

    The temporary file is in the same folder (so the rename is atomic) and has
    the same suffix (so writers that pick a format by suffix, or add one, keep
    it). A failure or interruption removes it and leaves `path` as it was; an
    OSError of the write names `path`, not the temporary file.
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
    except BaseException as e:
        if os.path.isdir(temporary):
            shutil.rmtree(temporary, ignore_errors=True)
        elif os.path.exists(temporary):
            os.remove(temporary)
        if isinstance(e, OSError) and e.errno is not None and e.filename in (None, temporary):
            raise OSError(e.errno, e.strerror, path) from e  # named by the file the caller asked for
        raise


def run_parallel(jobs) -> None:
    """Run the callables (file writers) in threads, one per core: x264, zlib
    and Pillow's encoders release the GIL. Waits for every job, then raises
    the first failure in job order."""
    if not jobs:
        return
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(len(jobs), os.cpu_count() or 1)) as pool:
        futures = [pool.submit(job) for job in jobs]
    for future in futures:
        future.result()


def write_bytes_atomically(path, content: bytes) -> None:
    def write(temporary):
        with open(temporary, "wb") as f:
            f.write(content)

    write_atomically(path, write)


def write_json(path, value, indent: int = 2, sort_keys: bool = False) -> None:
    """`value` as JSON, atomically."""
    write_bytes_atomically(path, json.dumps(value, indent=indent, sort_keys=sort_keys).encode())


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
    """uint8 (H, W, 3) RGB, upright, or UserError saying in one line what is wrong.

    Read by Pillow. A camera's EXIF orientation is applied (phones store
    portrait photos sideways and say so in that tag; dlib finds no face lying
    on its side); CMYK and other colour spaces become RGB; an alpha channel
    that is opaque everywhere is dropped. Refused: grayscale, transparency,
    more than 8 bits, tiny and huge images.
    """
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such file")
    try:
        meta = iio.immeta(path, plugin="pillow")  # the header only: no pixels decoded yet
        width, height = meta["shape"]  # Pillow's (width, height)
        if width * height > MAX_IMAGE_PIXELS:
            raise UserError(f"{path}: {width}x{height} pixels is more than "
                            f"{MAX_IMAGE_PIXELS // 1_000_000} megapixels; shrink it first")
        to_rgb = meta.get("mode") in ("CMYK", "YCbCr", "LAB", "HSV")
        image = iio.imread(path, plugin="pillow", rotate=True, mode="RGB" if to_rgb else None)
    except UserError:
        raise
    except Exception as e:  # imageio/Pillow raise many types for a bad file
        cause = e
        while cause.__cause__ is not None:  # imageio wraps Pillow's reason ("Truncated File Read") in its own
            cause = cause.__cause__
        reason = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
        raise UserError(f"{path}: not a readable image ({reason})") from e
    if image.ndim == 4:  # an animation: its first frame
        image = image[0]
    if image.ndim == 2 or (image.ndim == 3 and image.shape[-1] in (1, 2)):
        raise UserError(f"{path}: grayscale image; the models are trained on colour photos, give an RGB one")
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise UserError(f"{path}: unsupported image layout {image.shape}")
    if image.dtype != np.uint8:
        raise UserError(f"{path}: {image.dtype} pixels; give an 8-bit RGB photo")
    if image.shape[-1] == 4:
        if image[..., 3].min() < 255:
            raise UserError(f"{path}: image has transparent pixels (alpha channel); flatten it onto a background first")
        image = np.ascontiguousarray(image[..., :3])
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
    """Starting ffmpeg: subprocess forks and execs at once, so JAX's warning
    about fork in a threaded process does not apply."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="os.fork", category=RuntimeWarning)
        yield


def write_png(path, image: np.ndarray) -> None:
    """Write uint8 (H, W, 3) as PNG, atomically."""
    image = np.asarray(image, np.uint8)
    # zlib level 1: PNG's default level 6 takes ~3x as long for files ~10 % smaller.
    write_atomically(path, lambda temporary: iio.imwrite(temporary, image, extension=".png", compress_level=1))


def write_jpeg(path, image: np.ndarray, quality: int = 85) -> None:
    """Write uint8 (H, W, 3) as JPEG (figures for documents), atomically."""
    image = np.asarray(image, np.uint8)
    write_atomically(path, lambda temporary: iio.imwrite(temporary, image, extension=".jpeg", quality=quality))


def write_mp4(path: str, frames, fps: float, crf: int | None = None, threads: int = 0) -> None:
    """H.264 mp4 in yuv420p of uint8 (H, W, 3) frames (an array or an iterable,
    encoded as they come), by libx264 inside this process (PyAV: no ffmpeg
    process to start, which cost 24 ms of CPU per file) with x264's ultrafast
    preset: the least CPU, and at the same quality setting more bits, so a
    higher PSNR and larger files than slower presets. yuv420p needs even sizes:
    an odd height or width is padded by repeating the last row or column.
    crf: the quality (0 lossless .. 51 worst), None for x264's default (23);
    threads: x264's threads, 0 for as many as it likes (one is the least CPU
    per file, for callers that write several files at once). The encoder
    releases the GIL. OSError naming the file when encoding or writing fails."""
    options = {"preset": "ultrafast", **({} if crf is None else {"crf": str(crf)})}
    try:
        with av.open(os.fspath(path), "w", format="mp4") as container:
            stream = None
            for frame in frames:
                frame = np.asarray(frame, np.uint8)
                if frame.shape[0] % 2 or frame.shape[1] % 2:
                    frame = np.pad(frame, ((0, frame.shape[0] % 2), (0, frame.shape[1] % 2), (0, 0)), mode="edge")
                if stream is None:
                    stream = container.add_stream("libx264", rate=fractions.Fraction(fps).limit_denominator(1001),
                                                  options=options)
                    stream.height, stream.width = frame.shape[:2]
                    stream.pix_fmt = "yuv420p"
                    stream.codec_context.thread_count = threads
                container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
            if stream is None:
                raise ValueError("no frames to write")
            container.mux(stream.encode())
    except av.FFmpegError as e:  # its errno and reason, e.g. "No space left on device"
        raise OSError(e.errno, e.strerror or str(e), os.fspath(path)) from e


def write_gif(path: str, frames: np.ndarray, fps: float) -> None:
    """An endlessly looping GIF of uint8 frames (T, H, W, 3): one 256-colour
    palette for the whole animation, so colours do not flicker between frames.
    The palette is Pillow's fast octree of PALETTE_FRAMES frames spread over
    the video, and every frame takes its nearest colours, undithered (for 32
    frames of 256 px: 6 ms against 20 ms for the octree of every frame, at
    37.7 against 37.2 dB PSNR)."""
    count, height, width = frames.shape[:3]
    spread = np.ascontiguousarray(frames[np.linspace(0, count - 1, min(count, PALETTE_FRAMES)).round().astype(int)])
    palette = Image.fromarray(spread.reshape(-1, width, 3)).quantize(256, method=Image.Quantize.FASTOCTREE)
    stacked = Image.fromarray(np.ascontiguousarray(frames).reshape(count * height, width, 3))
    indices = np.asarray(stacked.quantize(palette=palette, dither=Image.Dither.NONE)).reshape(count, height, width)
    colours = palette.getpalette()
    images = []
    for index in indices:
        image = Image.fromarray(index, mode="P")
        image.putpalette(colours)
        images.append(image)
    images[0].save(path, format="GIF", save_all=True, append_images=images[1:], duration=1000.0 / fps, loop=0)


def write_npz(path, **arrays) -> None:
    """`np.savez` (stored, not compressed), atomically. Rendered frames barely
    compress: zlib level 1 took 31 -> 25 MB for five 256-px videos, at 0.6 s
    against 0.02 s stored."""
    def write(temporary):
        with zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_STORED) as archive:
            for name, value in arrays.items():
                with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)

    write_atomically(path, write)


def write_video(path, frames: np.ndarray, fps: float = 8) -> None:
    """Write uint8 frames (T, H, W, 3) as `.gif` or `.mp4` (by suffix), atomically."""
    frames = np.asarray(frames, np.uint8)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3), got {frames.shape}")
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix == ".gif":
        def write(temporary):
            write_gif(temporary, frames, fps)
    elif suffix == ".mp4":
        def write(temporary):  # one x264 thread: the callers write several files at once (run_parallel)
            write_mp4(temporary, frames, fps, threads=1)
    else:
        raise ValueError(f"unknown video suffix {suffix!r}: use .gif or .mp4")
    write_atomically(path, write)
