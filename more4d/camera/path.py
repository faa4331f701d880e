"""Keyframed camera paths: Kochanek-Bartels splines for position and FOV, quaternion splines for rotation.

Poses are camera-to-world 4x4 in OpenCV axes (`opencv_c2w`: x right, y down, z forward) in the frame of the
input camera; FOVs are vertical, in degrees; times in seconds.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import splines
import splines.quaternion as squat
import torch
import viser.transforms as vtf

from more4d.errors import InputError
from more4d.geometry import intrinsics_from_fov

ORTHONORMAL_TOL = 1e-3
_DENSE_PER_SEGMENT = 64  # samples per keyframe segment for the arc-length table (constant_speed)


def rotation_to_quaternion(R: np.ndarray) -> squat.UnitQuaternion:
    """Rotation matrix `(3, 3)` -> the splines library's unit quaternion, converted by viser's SO3 (the viewer's)."""
    w, x, y, z = vtf.SO3.from_matrix(np.asarray(R, dtype=np.float64)).wxyz
    return squat.UnitQuaternion.from_unit_xyzw((x, y, z, w))


def quaternion_to_rotation(q: squat.UnitQuaternion) -> np.ndarray:
    """The splines library's unit quaternion -> rotation matrix `(3, 3)` float64, by viser's SO3."""
    x, y, z, w = q.xyzw
    return vtf.SO3(np.array([w, x, y, z], dtype=np.float64)).as_matrix()


def check_c2w(c2w: np.ndarray | Sequence, name: str = "c2w") -> np.ndarray:
    """Return `c2w` as a float64 `(4, 4)` rigid transform, raising `InputError` for anything else."""
    try:
        c2w = np.array(c2w, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be a 4x4 matrix of numbers: {exc}") from exc
    if c2w.shape != (4, 4):
        raise InputError(f"{name} must have shape (4, 4), got {c2w.shape}")
    if not np.isfinite(c2w).all():
        raise InputError(f"{name} contains NaN or infinite values")
    if not np.allclose(c2w[3], [0, 0, 0, 1], atol=1e-6):
        raise InputError(f"{name} last row must be [0, 0, 0, 1], got {c2w[3].tolist()}")
    R = c2w[:3, :3]
    err = float(np.abs(R.T @ R - np.eye(3)).max())
    if err > ORTHONORMAL_TOL or np.linalg.det(R) < 0:
        raise InputError(f"{name} rotation is not orthonormal with det +1 (max |R^T R - I| = {err:.2g}, "
                         f"det = {np.linalg.det(R):.3g}); scale or shear in a camera pose is not supported")
    return c2w


@dataclass(frozen=True, eq=False)
class Keyframe:
    """One camera keyframe: `c2w` `(4, 4)` float64 opencv_c2w, vertical `fov_deg`, `time` in seconds."""

    c2w: np.ndarray
    fov_deg: float
    time: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "c2w", check_c2w(self.c2w))
        fov, time = float(self.fov_deg), float(self.time)
        if not math.isfinite(fov) or not 0.0 < fov < 180.0:
            raise InputError(f"keyframe fov_deg must be in (0, 180) degrees, got {self.fov_deg}")
        if not math.isfinite(time):
            raise InputError(f"keyframe time must be finite, got {self.time}")
        object.__setattr__(self, "fov_deg", fov)
        object.__setattr__(self, "time", time)


@dataclass
class CameraTrajectory:
    """Per-frame cameras: `c2w` `(F, 4, 4)` float32 opencv_c2w, vertical `fov_deg` `(F,)`, `times` `(F,)` seconds."""

    c2w: torch.Tensor
    fov_deg: torch.Tensor
    times: torch.Tensor

    def __post_init__(self) -> None:
        F = self.c2w.shape[0] if self.c2w.ndim == 3 else -1
        if self.c2w.shape[1:] != (4, 4) or F < 1:
            raise InputError(f"trajectory c2w must have shape (F, 4, 4) with F >= 1, got {tuple(self.c2w.shape)}")
        if tuple(self.fov_deg.shape) != (F,) or tuple(self.times.shape) != (F,):
            raise InputError(f"trajectory fov_deg and times must have shape ({F},), "
                             f"got {tuple(self.fov_deg.shape)} and {tuple(self.times.shape)}")

    def __len__(self) -> int:
        return int(self.c2w.shape[0])

    def intrinsics(self, height: int, width: int) -> torch.Tensor:
        """K `(F, 3, 3)` float32 for each frame's vertical FOV at `height` x `width`."""
        return torch.stack([intrinsics_from_fov(float(f), height, width) for f in self.fov_deg])

    def to(self, device: torch.device | str) -> CameraTrajectory:
        return CameraTrajectory(self.c2w.to(device), self.fov_deg.to(device), self.times.to(device))


class CameraPath:
    """Keyframes -> smooth per-frame cameras.

    Positions and FOV follow a Kochanek-Bartels spline (tension/continuity/bias; Catmull-Rom = 0, 0, 0),
    rotations the matching quaternion spline (`splines.quaternion.KochanekBartels`). A closed path loops back
    to its first keyframe; its closing segment lasts the mean keyframe interval. `constant_speed`
    re-parameterises by arc length (by rotation angle for paths that do not translate).

    >>> path = CameraPath([Keyframe(np.eye(4), 55.0, 0.0), Keyframe(pose, 55.0, 2.0)], fps=8.0)
    >>> traj = path.sample(17)   # 17 cameras spanning t = 0 .. 2 s
    """

    def __init__(
        self,
        keyframes: Sequence[Keyframe],
        *,
        fps: float = 8.0,
        closed: bool = False,
        tension: float = 0.0,
        continuity: float = 0.0,
        bias: float = 0.0,
        constant_speed: bool = False,
    ) -> None:
        keyframes = list(keyframes)
        if len(keyframes) < 2:
            raise InputError(f"a camera path needs at least 2 keyframes, got {len(keyframes)} "
                             "(for a still camera use the 'static' preset or two equal keyframes)")
        if not all(isinstance(k, Keyframe) for k in keyframes):
            raise InputError("keyframes must be a list of more4d.camera.Keyframe")
        keyframes.sort(key=lambda k: k.time)
        for a, b in zip(keyframes, keyframes[1:]):
            if b.time - a.time <= 1e-9:
                raise InputError(f"keyframe times must be distinct, got two keyframes at time {a.time} s")
        if not (math.isfinite(fps) and fps > 0):
            raise InputError(f"fps must be > 0, got {fps}")
        for name, value in (("tension", tension), ("continuity", continuity), ("bias", bias)):
            if not (math.isfinite(value) and -1.0 <= value <= 1.0):
                raise InputError(f"{name} must be in [-1, 1], got {value}")
        self.keyframes = keyframes
        self.fps = float(fps)
        self.closed = bool(closed)
        self.tension, self.continuity, self.bias = float(tension), float(continuity), float(bias)
        self.constant_speed = bool(constant_speed)

    def __repr__(self) -> str:
        return (f"CameraPath({len(self.keyframes)} keyframes, {self.duration:.3g} s, fps={self.fps}, "
                f"closed={self.closed}, tcb=({self.tension}, {self.continuity}, {self.bias}), "
                f"constant_speed={self.constant_speed})")

    @property
    def grid(self) -> list[float]:
        """Spline parameter values: keyframe times, plus the loop end for closed paths."""
        times = [k.time for k in self.keyframes]
        if self.closed:
            times.append(times[-1] + (times[-1] - times[0]) / (len(times) - 1))
        return times

    @property
    def duration(self) -> float:
        grid = self.grid
        return grid[-1] - grid[0]

    def _splines(self) -> tuple[splines.KochanekBartels, squat.KochanekBartels, splines.KochanekBartels]:
        ends = "closed" if self.closed else "natural"
        tcb = (self.tension, self.continuity, self.bias)
        grid = self.grid
        positions = np.stack([k.c2w[:3, 3] for k in self.keyframes])
        quats = [rotation_to_quaternion(k.c2w[:3, :3]) for k in self.keyframes]
        fovs = np.array([[k.fov_deg] for k in self.keyframes])
        with warnings.catch_warnings():  # splines 0.3.3 calls np.row_stack for closed rotation splines
            warnings.filterwarnings("ignore", message=".*row_stack", category=DeprecationWarning)
            rotations = squat.KochanekBartels(quats, grid, tcb=tcb, endconditions=ends)
        return (
            splines.KochanekBartels(positions, grid, tcb=tcb, endconditions=ends),
            rotations,
            splines.KochanekBartels(fovs, grid, tcb=tcb, endconditions=ends),
        )

    def _arc_length_times(self, pos, rot, targets: np.ndarray) -> np.ndarray:
        """Spline times at which the cumulative arc length reaches `targets` (fractions of the total)."""
        grid = self.grid
        dense = np.linspace(grid[0], grid[-1], _DENSE_PER_SEGMENT * (len(grid) - 1) + 1)
        steps = np.linalg.norm(np.diff(pos.evaluate(dense), axis=0), axis=-1)
        if steps.sum() < 1e-9:  # no translation: constant angular speed instead
            q = rot.evaluate(dense)
            steps = np.array([2.0 * math.acos(min(1.0, abs(a.dot(b)))) for a, b in zip(q, q[1:])])
        if steps.sum() < 1e-12:
            return grid[0] + targets * (grid[-1] - grid[0])
        cum = np.concatenate([[0.0], np.cumsum(steps)])
        return np.interp(targets * cum[-1], cum, dense)

    def sample(self, num_frames: int) -> CameraTrajectory:
        """`num_frames` cameras from the first to the last keyframe time (a closed path: once round the loop,
        without repeating the first camera at the end)."""
        if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
            raise InputError(f"num_frames must be an int >= 1, got {num_frames!r}")
        pos, rot, fov = self._splines()
        grid = self.grid
        if self.closed:
            fractions = np.arange(num_frames) / num_frames
        else:
            fractions = np.linspace(0.0, 1.0, num_frames) if num_frames > 1 else np.zeros(1)
        times = grid[0] + fractions * (grid[-1] - grid[0])
        params = self._arc_length_times(pos, rot, fractions) if self.constant_speed else times
        params = np.clip(params, grid[0], grid[-1])
        c2w = np.tile(np.eye(4), (num_frames, 1, 1))
        c2w[:, :3, 3] = pos.evaluate(params)
        c2w[:, :3, :3] = np.stack([quaternion_to_rotation(q) for q in rot.evaluate(params)])
        fovs = np.clip(fov.evaluate(params)[:, 0], 1.0, 179.0)
        return CameraTrajectory(
            c2w=torch.from_numpy(c2w).float(),
            fov_deg=torch.from_numpy(fovs).float(),
            times=torch.from_numpy(times).float(),
        )
