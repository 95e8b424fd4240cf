"""COLMAP sparse models: cameras, images and points3D, in COLMAP's binary (`.bin`) and text (`.txt`) layouts.

Binary (little-endian): cameras.bin = uint64 count, then per camera int32 id, int32 model id, uint64 width,
uint64 height, float64 params[n(model)]. images.bin = uint64 count, then per image int32 id, float64 qw qx qy qz,
float64 tx ty tz, int32 camera id, the name (bytes up to a NUL), uint64 n, then n x (float64 x, float64 y, int64
point3D id). points3D.bin = uint64 count, then per point uint64 id, float64 x y z, uint8 r g b, float64 error,
uint64 track length, then that many (int32 image id, int32 point2D index).
Text: '#' lines are comments; cameras.txt lines `ID MODEL WIDTH HEIGHT PARAMS...`; images.txt two lines per
image, `ID QW QX QY QZ TX TY TZ CAMERA_ID NAME` then its points (`X Y POINT3D_ID` triples, the line may be
empty); points3D.txt lines `ID X Y Z R G B ERROR (IMAGE_ID POINT2D_IDX)...`.

(qw, qx, qy, qz), t map world to camera: X_cam = R(q) X + t, camera axes x right, y down, z forward (OpenCV).
A point3D id of -1 marks a 2D point without a 3D point. Every parse problem is an InputError naming the file.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from perfdata.errors import InputError

CAMERA_MODELS: dict[int, tuple[str, int]] = {
    0: ("SIMPLE_PINHOLE", 3), 1: ("PINHOLE", 4), 2: ("SIMPLE_RADIAL", 4), 3: ("RADIAL", 5), 4: ("OPENCV", 8),
    5: ("OPENCV_FISHEYE", 8), 6: ("FULL_OPENCV", 12), 7: ("FOV", 5), 8: ("SIMPLE_RADIAL_FISHEYE", 4),
    9: ("RADIAL_FISHEYE", 5), 10: ("THIN_PRISM_FISHEYE", 12), 11: ("RAD_TAN_THIN_PRISM_FISHEYE", 16),
}
_N_PARAMS = dict(CAMERA_MODELS.values())
_POINT2D = np.dtype([("xy", "<f8", (2,)), ("id", "<i8")])


@dataclass(frozen=True)
class Camera:
    """One COLMAP camera: model name, image size in pixels and the model's parameters in COLMAP's order."""

    camera_id: int
    model: str
    width: int
    height: int
    params: tuple[float, ...]


@dataclass(frozen=True, eq=False)
class Image:
    """One registered image: world-to-camera rotation as a unit quaternion qvec (4,) (w, x, y, z) and tvec (3,),
    its camera, its file name (relative to the images folder) and the point3D id of each 2D point (-1: none)."""

    image_id: int
    qvec: np.ndarray
    tvec: np.ndarray
    camera_id: int
    name: str
    point3d_ids: np.ndarray

    def c2w(self) -> np.ndarray:
        """(4, 4) camera-to-world, OpenCV axes."""
        R = quaternion_to_rotation(self.qvec)
        pose = np.eye(4)
        pose[:3, :3] = R.T
        pose[:3, 3] = -R.T @ np.asarray(self.tvec, dtype=np.float64)
        return pose


@dataclass(frozen=True, eq=False)
class Points:
    """Triangulated points: ids (n,) int64, xyz (n, 3) float64, rgb (n, 3) uint8, error (n,) float64 (mean
    reprojection error, pixels) and track_length (n,) int64 (images that see each point)."""

    ids: np.ndarray
    xyz: np.ndarray
    rgb: np.ndarray
    error: np.ndarray
    track_length: np.ndarray


def quaternion_to_rotation(q: np.ndarray) -> np.ndarray:
    """(3, 3) rotation of the quaternion q (4,) = (w, x, y, z) (normalised first)."""
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


class _Bytes:
    """A cursor over a binary file's bytes; reading past the end is an InputError naming the file."""

    def __init__(self, path: Path) -> None:
        try:
            self.data = path.read_bytes()
        except OSError as exc:
            raise InputError(path, f"cannot read ({exc.strerror or exc})") from None
        self.path, self.pos = path, 0

    def unpack(self, fmt: str) -> tuple:
        size = struct.calcsize("<" + fmt)
        if self.pos + size > len(self.data):
            raise InputError(self.path, f"truncated at byte {self.pos} (expected {size} more bytes)")
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += size
        return values

    def array(self, dtype: np.dtype, count: int) -> np.ndarray:
        size = dtype.itemsize * count
        if self.pos + size > len(self.data):
            raise InputError(self.path, f"truncated at byte {self.pos} (expected {size} more bytes)")
        arr = np.frombuffer(self.data, dtype=dtype, count=count, offset=self.pos)
        self.pos += size
        return arr

    def name(self) -> str:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise InputError(self.path, f"truncated at byte {self.pos} (an image name without its NUL)")
        raw, self.pos = self.data[self.pos : end], end + 1
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(self.path, f"an image name is not UTF-8 ({raw[:40]!r})") from None

    def finish(self) -> None:
        if self.pos != len(self.data):
            raise InputError(self.path, f"{len(self.data) - self.pos} unexpected bytes after the last record")


def _text_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of every line that is not a comment; blank lines are kept (images.txt needs them)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read ({exc})") from None
    return [(i, line.strip()) for i, line in enumerate(text.splitlines(), 1) if not line.lstrip().startswith("#")]


def _numbers(path: Path, number: int, fields: list[str], kind: type = float) -> list:
    try:
        return [kind(v) for v in fields]
    except ValueError:
        raise InputError(path, f"line {number}: expected numbers, got {' '.join(fields)[:80]!r}") from None


def _camera(path: Path, where: str, camera_id: int, model: str, width: int, height: int, params: list) -> Camera:
    if model not in _N_PARAMS:
        raise InputError(path, f"{where}: unknown camera model {model!r}")
    if len(params) != _N_PARAMS[model]:
        raise InputError(path, f"{where}: model {model} takes {_N_PARAMS[model]} parameters, got {len(params)}")
    return Camera(camera_id, model, width, height, tuple(float(p) for p in params))


def read_cameras(path: Path) -> dict[int, Camera]:
    """cameras.bin or cameras.txt (by suffix) -> {camera_id: Camera}."""
    cameras = {}
    if path.suffix == ".bin":
        buf = _Bytes(path)
        for _ in range(buf.unpack("Q")[0]):
            camera_id, model_id, width, height = buf.unpack("iiQQ")
            if model_id not in CAMERA_MODELS:
                raise InputError(path, f"camera {camera_id}: unknown camera model id {model_id}")
            name, n = CAMERA_MODELS[model_id]
            cameras[camera_id] = _camera(path, f"camera {camera_id}", camera_id, name, width, height, list(buf.unpack(f"{n}d")))
        buf.finish()
        return cameras
    for number, line in _text_lines(path):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 4:
            raise InputError(path, f"line {number}: expected ID MODEL WIDTH HEIGHT PARAMS...")
        camera_id, width, height = _numbers(path, number, [fields[0], fields[2], fields[3]], int)
        params = _numbers(path, number, fields[4:])
        cameras[camera_id] = _camera(path, f"line {number}", camera_id, fields[1], width, height, params)
    return cameras


def read_images(path: Path) -> dict[int, Image]:
    """images.bin or images.txt (by suffix) -> {image_id: Image}."""
    images = {}
    if path.suffix == ".bin":
        buf = _Bytes(path)
        for _ in range(buf.unpack("Q")[0]):
            image_id, *pose, camera_id = buf.unpack("i7di")
            name = buf.name()
            points = buf.array(_POINT2D, buf.unpack("Q")[0])
            images[image_id] = Image(image_id, np.array(pose[:4]), np.array(pose[4:]), camera_id, name,
                                     points["id"].astype(np.int64))
        buf.finish()
        return images
    lines = iter(_text_lines(path))
    for number, line in lines:
        if not line:
            continue
        fields = line.split(maxsplit=9)
        if len(fields) != 10:
            raise InputError(path, f"line {number}: expected ID QW QX QY QZ TX TY TZ CAMERA_ID NAME")
        image_id, camera_id = _numbers(path, number, [fields[0], fields[8]], int)
        pose = _numbers(path, number, fields[1:8])
        point_number, point_line = next(lines, (number + 1, ""))
        values = point_line.split()
        if len(values) % 3:
            raise InputError(path, f"line {point_number}: 2D points come as X Y POINT3D_ID triples")
        ids = np.array(_numbers(path, point_number, values[2::3], int), dtype=np.int64)
        images[image_id] = Image(image_id, np.array(pose[:4]), np.array(pose[4:]), camera_id, fields[9], ids)
    return images


def read_points3d(path: Path) -> Points:
    """points3D.bin or points3D.txt (by suffix) -> Points."""
    rows: list[tuple] = []
    if path.suffix == ".bin":
        buf = _Bytes(path)
        for _ in range(buf.unpack("Q")[0]):
            point_id, x, y, z, r, g, b, error, track = buf.unpack("Q3d3BdQ")
            buf.array(np.dtype("<i4"), 2 * track)
            rows.append((point_id, x, y, z, r, g, b, error, track))
        buf.finish()
    else:
        for number, line in _text_lines(path):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < 8 or (len(fields) - 8) % 2:
                raise InputError(path, f"line {number}: expected ID X Y Z R G B ERROR (IMAGE_ID POINT2D_IDX)...")
            values = _numbers(path, number, fields[:8])
            rows.append((*values, (len(fields) - 8) // 2))
    table = np.array(rows, dtype=np.float64).reshape(-1, 9)
    if np.any(table[:, 4:7] < 0) or np.any(table[:, 4:7] > 255):
        raise InputError(path, "point colours must be 0..255")
    return Points(table[:, 0].astype(np.int64), table[:, 1:4].copy(), table[:, 4:7].astype(np.uint8),
                  table[:, 7].copy(), table[:, 8].astype(np.int64))


def model_file(model_dir: Path, stem: str) -> Path | None:
    """`model_dir/stem.bin` if present, else `stem.txt`, else None."""
    for suffix in (".bin", ".txt"):
        if (model_dir / (stem + suffix)).is_file():
            return model_dir / (stem + suffix)
    return None
