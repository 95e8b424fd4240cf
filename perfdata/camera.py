"""Camera maths in one convention: camera-to-world 4x4 with OpenCV axes (x right, y down, z forward),
intrinsics 3x3 K in pixels, pixel centres at integer + 0.5. Readers convert their source's convention at the edge
with the functions here. Plain numpy (float64); the fields turn rays into tensors themselves.
"""

from __future__ import annotations

import math

import numpy as np

# Flips y and z: OpenGL / Blender camera axes (x right, y up, looking down -z) <-> OpenCV axes.
_GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])


def opengl_to_opencv(c2w: np.ndarray) -> np.ndarray:
    """c2w (..., 4, 4) with OpenGL camera axes -> the same camera with OpenCV axes."""
    return np.asarray(c2w, dtype=np.float64) @ _GL_TO_CV


def opencv_to_opengl(c2w: np.ndarray) -> np.ndarray:
    """Inverse of `opengl_to_opencv` (the flip is its own inverse)."""
    return np.asarray(c2w, dtype=np.float64) @ _GL_TO_CV


def intrinsics(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """3x3 K from focal lengths and principal point, in pixels."""
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def intrinsics_from_fov(fov_x: float, width: int, height: int, fov_y: float | None = None) -> np.ndarray:
    """K of a centred pinhole camera from horizontal field of view (radians); square pixels unless fov_y given."""
    fx = 0.5 * width / math.tan(0.5 * fov_x)
    fy = fx if fov_y is None else 0.5 * height / math.tan(0.5 * fov_y)
    return intrinsics(fx, fy, 0.5 * width, 0.5 * height)


def scale_intrinsics(K: np.ndarray, sx: float, sy: float | None = None) -> np.ndarray:
    """K of the same camera after resizing the image by (sx, sy) (pixel-centre convention kept)."""
    sy = sx if sy is None else sy
    out = np.array(K, dtype=np.float64)
    out[0, :] *= sx
    out[1, :] *= sy
    out[2, :] = [0.0, 0.0, 1.0]
    return out


def pixel_grid(width: int, height: int) -> np.ndarray:
    """Pixel-centre coordinates (H*W, 2) as (u, v), row-major."""
    u, v = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5, indexing="xy")
    return np.stack([u.ravel(), v.ravel()], axis=-1)


def pixel_rays(K: np.ndarray, c2w: np.ndarray, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rays through pixel positions.

    Args:
        K: (3, 3) intrinsics. c2w: (4, 4) camera-to-world, OpenCV axes. uv: (n, 2) pixel positions.
    Returns:
        origins (n, 3) and directions (n, 3) in world coordinates, scaled so the camera-frame z of each
        direction is 1: a point at ray parameter t then has z-depth t.
    """
    uv = np.asarray(uv, dtype=np.float64)
    x = (uv[:, 0] - K[0, 2] - K[0, 1] * (uv[:, 1] - K[1, 2]) / K[1, 1]) / K[0, 0]
    y = (uv[:, 1] - K[1, 2]) / K[1, 1]
    dirs_cam = np.stack([x, y, np.ones_like(x)], axis=-1)
    dirs = dirs_cam @ np.asarray(c2w)[:3, :3].T
    origins = np.broadcast_to(np.asarray(c2w)[:3, 3], dirs.shape).copy()
    return origins, dirs


def image_rays(K: np.ndarray, c2w: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """`pixel_rays` for every pixel centre of a width x height image, row-major: (H*W, 3) each."""
    return pixel_rays(K, c2w, pixel_grid(width, height))


def project(points: np.ndarray, K: np.ndarray, c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World points (n, 3) -> pixel positions (n, 2) and z-depth (n,) in the camera (z <= 0: behind it)."""
    w2c = np.linalg.inv(np.asarray(c2w, dtype=np.float64))
    cam = np.asarray(points, dtype=np.float64) @ w2c[:3, :3].T + w2c[:3, 3]
    z = cam[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uvw = cam @ np.asarray(K).T
        uv = uvw[:, :2] / uvw[:, 2:3]
    return uv, z


def backproject(depth: np.ndarray, K: np.ndarray, c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Depth map (H, W) of z-depth (0 = unknown) -> world points (n, 3) of the valid pixels and their flat indices."""
    h, w = depth.shape
    flat = np.flatnonzero(np.isfinite(depth.ravel()) & (depth.ravel() > 0))
    uv = pixel_grid(w, h)[flat]
    origins, dirs = pixel_rays(K, c2w, uv)
    return origins + dirs * depth.ravel()[flat, None], flat


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray = np.array([0.0, 0.0, 1.0])) -> np.ndarray:
    """c2w (4, 4), OpenCV axes, of a camera at `eye` looking at `target`, with `up` pointing up in the image."""
    eye = np.asarray(eye, dtype=np.float64)
    forward = np.asarray(target, dtype=np.float64) - eye
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, np.asarray(up, dtype=np.float64))  # OpenCV: right = forward x up (down = -up)
    if np.linalg.norm(right) < 1e-8:  # looking along `up`: pick any perpendicular
        right = np.cross(forward, np.array([1.0, 0.0, 0.0]))
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, down, forward, eye
    return c2w


def nearest_point_to_axes(centres: np.ndarray, axes: np.ndarray) -> np.ndarray:
    """(3,) point nearest (least squares) to the lines through centres (n, 3) along axes (n, 3) -- where the
    optical axes of an inward-looking capture meet."""
    axes = np.asarray(axes, dtype=np.float64)
    axes = axes / np.linalg.norm(axes, axis=1, keepdims=True)
    P = np.eye(3)[None] - axes[:, :, None] * axes[:, None, :]  # (n, 3, 3) projections across each axis
    return np.linalg.lstsq(P.sum(0), np.einsum("nij,nj->i", P, np.asarray(centres, dtype=np.float64)), rcond=None)[0]


def is_valid_pose(c2w: np.ndarray, tol: float = 1e-3) -> bool:
    """Finite, with an orthonormal right-handed rotation block and a last row of [0, 0, 0, 1]."""
    c2w = np.asarray(c2w, dtype=np.float64)
    if c2w.shape != (4, 4) or not np.all(np.isfinite(c2w)):
        return False
    rot = c2w[:3, :3]
    return bool(
        np.allclose(rot @ rot.T, np.eye(3), atol=tol)
        and abs(np.linalg.det(rot) - 1.0) < tol
        and np.allclose(c2w[3], [0.0, 0.0, 0.0, 1.0], atol=tol)
    )
