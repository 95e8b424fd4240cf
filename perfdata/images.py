"""Reading and writing the image files of captures: colour, 16-bit depth, masks and label maps.

Every reader goes through these functions, so a missing or unreadable file is always an `InputError` that names it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from perfdata.atomic import atomic_path
from perfdata.errors import InputError

# leading bytes of the formats captures come in -> name
SIGNATURES = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG"}


def image_kind(path: str | Path) -> str | None:
    """"PNG" or "JPEG" from a file's leading bytes, else None."""
    with open(path, "rb") as fh:
        head = fh.read(8)
    return next((kind for sig, kind in SIGNATURES.items() if head.startswith(sig)), None)


def decode_problem(path: Path, exc: Exception) -> str:
    """What to say about an image that failed to decode: not a PNG/JPEG at all, or a damaged one (the decoder's
    own hints, such as imageio's plugin suggestions, would only mislead)."""
    kind = image_kind(path)
    if kind is None:
        return "cannot read image: not a PNG/JPEG image (unknown leading bytes)"
    detail = str(exc).splitlines()[0] if str(exc) else ""
    return f"cannot read image: damaged {kind} image ({type(exc).__name__}: {detail})"


def read_array(path: str | Path) -> np.ndarray:
    """Decode an image file as stored (uint8 / uint16, (H, W) or (H, W, C))."""
    import imageio.v3 as iio

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    if path.suffix.lower() in (".png", ".jpg", ".jpeg") and image_kind(path) is None:
        raise InputError(path, decode_problem(path, ValueError()))  # imageio would try every plugin, and hint
    try:
        return np.asarray(iio.imread(path))
    except Exception as exc:  # imageio raises many types for bad files
        raise InputError(path, decode_problem(path, exc)) from None


def image_header(path: str | Path) -> tuple[int, int, int]:
    """(width, height, n_channels) of an image file from its header, without decoding the pixels."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        with Image.open(path) as im:
            return int(im.size[0]), int(im.size[1]), len(im.getbands())
    except Exception as exc:  # PIL raises many types for bad files
        raise InputError(path, decode_problem(path, exc)) from None


def read_rgba(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Colour as float32 (H, W, 3) in [0, 1], and alpha as float32 (H, W) in [0, 1] when the file has it."""
    arr = read_array(path)
    scale = 65535.0 if arr.dtype == np.uint16 else 255.0
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        raise InputError(path, f"expected an RGB or RGBA image, got shape {arr.shape}")
    rgb = arr[..., :3].astype(np.float32) / scale
    alpha = arr[..., 3].astype(np.float32) / scale if arr.shape[-1] == 4 else None
    return rgb, alpha


def read_depth(path: str | Path, scale: float = 1000.0) -> np.ndarray:
    """A depth file as float32 (H, W) metres, 0 = unknown: `.npy` holds float metres; an image (PNG) holds
    uint16 units of 1/scale metre (default millimetres)."""
    path = Path(path)
    if path.suffix == ".npy":
        if not path.is_file():
            raise InputError(path, "file not found")
        try:
            arr = np.load(path, allow_pickle=False)
        except Exception as exc:
            raise InputError(path, f"cannot read depth array ({exc})") from None
        if arr.ndim != 2 or arr.dtype.kind != "f":
            raise InputError(path, f"expected a 2-D float depth array, got {arr.dtype} {arr.shape}")
        return np.nan_to_num(arr.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    arr = read_array(path)
    if arr.ndim != 2 or arr.dtype != np.uint16:
        raise InputError(path, f"expected a single-channel uint16 depth image, got {arr.dtype} {arr.shape}")
    return arr.astype(np.float32) / np.float32(scale)


def read_mask(path: str | Path) -> np.ndarray:
    """A mask image as bool (H, W): True where the value is above half of its range."""
    arr = read_array(path)
    if arr.ndim == 3:
        arr = arr[..., -1] if arr.shape[-1] in (2, 4) else arr[..., 0]
    limit = 65535 if arr.dtype == np.uint16 else 255
    return arr > limit / 2


def read_labels(path: str | Path) -> np.ndarray:
    """A label map as int32 (H, W); 255 in an 8-bit map (and 65535 in a 16-bit one) becomes -1 (ignore)."""
    arr = read_array(path)
    if arr.ndim == 3:
        arr = arr[..., 0]
    out = arr.astype(np.int32)
    if arr.dtype == np.uint8:
        out[arr == 255] = -1
    elif arr.dtype == np.uint16:
        out[arr == 65535] = -1
    return out


def write_png(path: str | Path, image: np.ndarray) -> None:
    """Write uint8 / uint16 (H, W) or (H, W, C) to PNG atomically; float input in [0, 1] becomes uint8."""
    import imageio.v3 as iio

    if image.dtype.kind == "f":
        image = (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    with atomic_path(path) as tmp:
        iio.imwrite(tmp, image, extension=".png")


def labels_to_png(labels: np.ndarray) -> np.ndarray:
    """int (H, W) labels with -1 = ignore -> uint8 with 255 = ignore (ids must be below 255)."""
    if labels.size and labels.max() >= 255:
        raise ValueError("label ids must be below 255 to store in an 8-bit PNG")
    return np.where(labels < 0, 255, labels).astype(np.uint8)


def depth_to_png(depth_m: np.ndarray, scale: float = 1000.0) -> np.ndarray:
    """float metres (H, W) -> uint16 (millimetres by default); values beyond the range saturate, 0 = unknown."""
    return np.clip(np.round(np.nan_to_num(depth_m) * scale), 0, 65535).astype(np.uint16)
