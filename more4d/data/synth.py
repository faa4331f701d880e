"""TrajScene-Synth: procedural 4D scenes with exact ground truth, rendered by analytic ray casting in torch.

A clip is a textured ground plane and backdrop with 1-4 textured primitives (ball, box, cylinder, capsule)
under Lambertian shading, each moving by one sampled motion (translate, bounce, orbit, spin, approach,
recede, pulse, static), optionally seen by a moving camera. For every frame-0 pixel the generator knows the
surface point it sees, so its 3D trajectory (in camera-0 OpenCV coordinates) follows from that object's
analytic motion; visibility is a depth test against each frame's depth map plus the image bounds. A surface
wears a procedural pattern or, with `SynthConfig.photo_prob`, a real photograph (`photo_textures`): texture that
is not geometry, as in photos. `large_prob` stretches objects to the size of a photo's subject, `closeup_prob` frames
one photo-wearing object near the camera as a photo frames its subject (it alone moves), `part_prob` attaches the
close-up's other objects to it as parts (a head, an arm), so that what moves is not one convex primitive, and
`unnamed_prob` captions a clip with one moving object as users caption photos ("the dog moves left").

All random parameters and all per-frame transforms are drawn and computed on the CPU from a
`torch.Generator` seeded per clip; only per-pixel work runs on `device`, so CPU and CUDA give the same
clip up to float rounding (and a few texels on pattern boundaries).

>>> clips = generate_clips([0, 1], SynthConfig())          # list[TrajClip]
>>> batch = generate_batch(range(64), SynthConfig(), "cuda")  # stacked tensors for on-the-fly training
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F

from more4d.data.formats import NovelView, TrajClip
from more4d.data.photo_textures import TRAINING_PHOTOS, is_grayscale, photo_bank, photo_sizes
from more4d.errors import InputError
from more4d.geometry import DEFAULT_FOV_DEG, DIRECTION_AXES, intrinsics_from_fov

SHAPES = ("ball", "box", "cylinder", "capsule")
MOTIONS = ("translate", "bounce", "orbit", "spin", "approach", "recede", "pulse", "static")
CAMERA_MOTIONS = ("static", "pan", "truck", "dolly", "orbit")
TEXTURES = ("checker", "stripes", "noise")
COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.12, 0.10), "green": (0.18, 0.68, 0.22), "blue": (0.12, 0.28, 0.88),
    "yellow": (0.95, 0.85, 0.12), "orange": (0.96, 0.50, 0.08), "purple": (0.55, 0.22, 0.75),
    "white": (0.93, 0.93, 0.93), "pink": (0.96, 0.50, 0.70), "cyan": (0.15, 0.80, 0.85),
}
BACKGROUND_COLORS = ((0.55, 0.55, 0.55), (0.76, 0.70, 0.55), (0.50, 0.35, 0.22), (0.35, 0.42, 0.50),
                     (0.45, 0.50, 0.30), (0.62, 0.58, 0.66), (0.30, 0.45, 0.42))
SKY = (0.70, 0.80, 0.95)
# Everyday nouns for `SynthConfig.unnamed_prob`; none names a TrajScene-Synth shape, and most are outside the tiny
# tokenizer's vocabulary (it reads them as [UNK]), as most things in a user's photo are.
EVERYDAY_NOUNS = ("person", "man", "woman", "dog", "cat", "car", "bird", "toy", "lamp", "vase", "kettle", "robot",
                  "bottle", "chair", "plant", "statue", "boat", "horse", "bicycle", "teapot", "puppet", "sheep")
MAX_OBJECTS = 4
NUM_SURFACES = MAX_OBJECTS + 2  # objects, then ground, then backdrop
GROUND, BACKDROP, MISS = MAX_OBJECTS, MAX_OBJECTS + 1, MAX_OBJECTS + 2
PIXEL_CENTER = 0.5  # pixel (i, j) is the ray through (j + 0.5, i + 0.5), as in more4d.geometry
OBJECT_DEPTH = (2.6, 5.2)  # metres from camera 0 to an object's centre
CLOSEUP_DEPTH = (1.8, 2.6)  # ... and to a close-up's subject
VIS_REL_TOL = 5e-3  # a point is visible unless all 4 nearest depth samples are in front of it by this much
_EPS = 1e-4


@dataclass(frozen=True)
class SynthConfig:
    """What to generate. `SynthConfig.paper_scale()` gives the paper's 49 x 368 x 512."""

    num_frames: int = 17
    height: int = 256
    width: int = 256
    fov_deg: float = DEFAULT_FOV_DEG  # vertical
    fps: float = 8.0
    min_objects: int = 1
    max_objects: int = MAX_OBJECTS
    camera_motion_prob: float = 0.3
    static_prob: float = 0.05  # chance that an object does not move
    novel_views: int = 2  # novel camera paths rendered per clip (0 skips them)
    photo_prob: float = 0.0  # chance that a surface wears a real photo instead of its pattern (photo_textures)
    unnamed_prob: float = 0.0  # chance that the one moving object is named by an everyday noun (see _caption)
    large_prob: float = 0.0  # chance that an object is stretched 1.5-3x, as large as the subject of a photo
    closeup_prob: float = 0.0  # chance that the clip is a close-up of its first object, the only one that moves
    part_prob: float = 0.0  # in a close-up, chance that each other object is a part of the subject and moves with it

    def __post_init__(self) -> None:
        if self.num_frames < 2 or (self.num_frames - 1) % 4:
            raise InputError(f"num_frames must be 4k+1 and >= 5, got {self.num_frames}")
        if min(self.height, self.width) < 16:
            raise InputError(f"height and width must be >= 16, got {self.height}x{self.width}")
        if not 1 <= self.min_objects <= self.max_objects <= MAX_OBJECTS:
            raise InputError(f"need 1 <= min_objects <= max_objects <= {MAX_OBJECTS}, "
                             f"got {self.min_objects}, {self.max_objects}")
        if not 0.0 < self.fov_deg < 170.0:
            raise InputError(f"fov_deg must be in (0, 170), got {self.fov_deg}")
        if not 0 <= self.novel_views <= 4:
            raise InputError(f"novel_views must be in [0, 4], got {self.novel_views}")
        if self.fps <= 0:
            raise InputError(f"fps must be > 0, got {self.fps}")
        for name in ("photo_prob", "unnamed_prob", "large_prob", "closeup_prob", "part_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise InputError(f"{name} must be in [0, 1], got {getattr(self, name)}")

    @classmethod
    def paper_scale(cls, **overrides: Any) -> SynthConfig:
        return cls(**{"num_frames": 49, "height": 368, "width": 512, **overrides})

    def intrinsics(self) -> torch.Tensor:
        """`(3, 3)` float32 pinhole K from the vertical FOV (principal point at the image centre)."""
        return intrinsics_from_fov(self.fov_deg, self.height, self.width)


@dataclass
class SynthBatch:
    """B generated clips as stacked tensors on one device (N = H*W, V = config.novel_views).

    frames `(B, T, H, W, 3)` uint8; depth `(B, T, H, W)` float32 z-depth (0 where nothing is hit);
    points `(B, T, N, 3)` float32 camera-0 OpenCV coords of each frame-0 pixel (row-major);
    visibility `(B, T, N)` bool; colors `(B, N, 3)` float32 in [0, 1]; K `(B, 3, 3)`;
    c2w `(B, T, 4, 4)` source camera (opencv_c2w, frame 0 = identity);
    novel_frames `(B, V, T, H, W, 3)` uint8, novel_depth `(B, V, T, H, W)`, novel_c2w `(B, V, T, 4, 4)`;
    captions and metas: one per clip.
    """

    frames: torch.Tensor
    depth: torch.Tensor
    points: torch.Tensor
    visibility: torch.Tensor
    colors: torch.Tensor
    K: torch.Tensor
    c2w: torch.Tensor
    novel_frames: torch.Tensor
    novel_depth: torch.Tensor
    novel_c2w: torch.Tensor
    captions: list[str]
    metas: list[dict[str, Any]]
    fps: float = 8.0

    def __len__(self) -> int:
        return self.frames.shape[0]

    def select(self, index: Sequence[int]) -> SynthBatch:
        """The clips at `index` (in that order), on the same device."""
        idx = torch.as_tensor(list(index), dtype=torch.long, device=self.frames.device)

        def pick(value: Any) -> Any:
            if isinstance(value, torch.Tensor):
                return value[idx]
            return [value[i] for i in index] if isinstance(value, list) else value

        return SynthBatch(**{f.name: pick(getattr(self, f.name)) for f in fields(self)})

    @classmethod
    def cat(cls, batches: Sequence[SynthBatch]) -> SynthBatch:
        """One batch of every clip of `batches` (same sizes, device and fps), in order."""
        def join(name: str) -> Any:
            values = [getattr(b, name) for b in batches]
            if isinstance(values[0], torch.Tensor):
                return torch.cat(values)
            return [x for v in values for x in v] if isinstance(values[0], list) else values[0]

        return cls(**{f.name: join(f.name) for f in fields(cls)})

    def clips(self) -> list[TrajClip]:
        """Split into CPU `TrajClip`s."""
        out = []
        for b in range(len(self)):
            novel = [NovelView(c2w=self.novel_c2w[b, v].cpu(), K=self.K[b].cpu(), frames=self.novel_frames[b, v].cpu())
                     for v in range(self.novel_frames.shape[1])]
            out.append(TrajClip(frames=self.frames[b].cpu(), points=self.points[b].cpu(),
                                visibility=self.visibility[b].cpu(), colors=self.colors[b].cpu(),
                                K=self.K[b].cpu(), depth=self.depth[b].cpu(), caption=self.captions[b],
                                fps=self.fps, meta=self.metas[b], novel=novel))
        return out


def generate_clips(seeds: Iterable[int], config: SynthConfig | None = None, device: str | torch.device = "cpu",
                   *, batch_size: int | None = None) -> list[TrajClip]:
    """Generate one CPU `TrajClip` per seed (same seed -> same clip on any device).

    Clips are rendered `batch_size` at a time (default 1 on CPU, where it is fastest, and 32 on GPU).
    """
    seeds = list(seeds)
    batch_size = batch_size or (1 if torch.device(device).type == "cpu" else 32)
    clips: list[TrajClip] = []
    for i in range(0, len(seeds), max(1, batch_size)):
        clips += generate_batch(seeds[i:i + batch_size], config, device).clips()
    return clips


@torch.no_grad()
def generate_batch(seeds: Iterable[int], config: SynthConfig | None = None,
                   device: str | torch.device = "cpu") -> SynthBatch:
    """Generate clips for `seeds` in one batched render; all outputs stay on `device` (see `SynthBatch`)."""
    config = config or SynthConfig()
    seeds = [_check_seed(s) for s in seeds]
    if not seeds:
        raise InputError("seeds must contain at least one seed")
    return _render_batch([_sample_clip(s, config) for s in seeds], config, torch.device(device))


def sample_captions(seeds: Iterable[int], config: SynthConfig | None = None) -> list[str]:
    """The captions of `seeds`' clips, drawn without rendering them (~3 ms each on a CPU)."""
    config = config or SynthConfig()
    return [_sample_clip(_check_seed(s), config)[1] for s in seeds]


@torch.no_grad()
def generate_siblings(seed: int, count: int, config: SynthConfig | None = None, device: str | torch.device = "cpu",
                      generator_seed: int = 0) -> SynthBatch:
    """`count` clips with `seed`'s frame 0 and caption whose other motion parameters are redrawn (magnitudes, orbit
    phase and sweep, spin sign and angle, bounce and pulse counts): draws of the clip's motion given all that its
    image and caption show. `more4d eval` scores them against the clip as the floor of a perfect sampler."""
    config = config or SynthConfig()
    seed = _check_seed(seed)
    if not isinstance(count, int) or count < 1:
        raise InputError(f"count must be a positive int, got {count!r}")
    resample = torch.Generator().manual_seed(generator_seed)
    return _render_batch([_sample_clip(seed, config, resample) for _ in range(count)], config, torch.device(device))


def _render_batch(sampled: list[tuple[dict[str, torch.Tensor], str, dict[str, Any]]], config: SynthConfig,
                  device: torch.device) -> SynthBatch:
    B, T, H, W, V = len(sampled), config.num_frames, config.height, config.width, config.novel_views
    params = {k: torch.stack([p[k] for p, _, _ in sampled]).to(device) for k in sampled[0][0]}
    K = config.intrinsics().to(device)
    rays = _camera_rays(K, H, W)  # (3, N)

    # 1) source video, exact depth; 2) frame-0 surface points moved by their object's motion; 3) visibility
    rgb, depth, ids = _render(params, params["c2w"], rays, K, H, W)
    c2w0 = params["c2w"][:, 0]
    hits0 = (_apply(c2w0[:, :3, :3], depth[:, 0, None] * rays) + c2w0[:, :3, 3:]).transpose(1, 2)  # (B, N, 3)
    points = _trajectories(params, ids[:, 0], hits0)
    visibility = _visibility(points, params["c2w"], depth, K, H, W)
    visibility[:, 0] = True
    # 4) the same clip from novel camera paths
    novel = [_render(params, params["novel_c2w"][:, v], rays, K, H, W)[:2] for v in range(V)]

    def to_video(x: torch.Tensor) -> torch.Tensor:
        return (x.clamp(0, 1) * 255 + 0.5).to(torch.uint8).reshape(B, T, H, W, 3)

    return SynthBatch(
        frames=to_video(rgb), depth=depth.view(B, T, H, W), points=points, visibility=visibility,
        colors=rgb[:, 0].contiguous(), K=K.expand(B, 3, 3).contiguous(), c2w=params["c2w"],
        novel_frames=torch.stack([to_video(r) for r, _ in novel], 1) if V else
        torch.zeros(B, 0, T, H, W, 3, dtype=torch.uint8, device=device),
        novel_depth=torch.stack([d.view(B, T, H, W) for _, d in novel], 1) if V else
        torch.zeros(B, 0, T, H, W, device=device),
        novel_c2w=params["novel_c2w"][:, :V], captions=[c for _, c, _ in sampled],
        metas=[m for _, _, m in sampled], fps=config.fps)


# ----------------------------------------------------------------------------------------------------------
# 1) Scene sampling (CPU, per clip)
# ----------------------------------------------------------------------------------------------------------


@dataclass
class _Draw:
    """The random draws of one clip. With `resample`, the draws marked `hidden` (what neither frame 0 nor the caption
    fixes) come from `resample` instead; the clip's own stream advances the same, so every other draw is unchanged."""

    seed: int
    resample: torch.Generator | None = None
    g: torch.Generator = field(init=False)

    def __post_init__(self) -> None:
        self.g = torch.Generator().manual_seed(self.seed)

    def uniform(self, lo: float, hi: float, hidden: bool = False) -> float:
        u = torch.rand((), generator=self.g, dtype=torch.float64)
        if hidden and self.resample is not None:
            u = torch.rand((), generator=self.resample, dtype=torch.float64)
        return lo + (hi - lo) * float(u)

    def integer(self, n: int, hidden: bool = False) -> int:
        value = torch.randint(n, (), generator=self.g)
        if hidden and self.resample is not None:
            value = torch.randint(n, (), generator=self.resample)
        return int(value)

    def choice(self, seq: Sequence[Any]) -> Any:
        return seq[self.integer(len(seq))]

    def sign(self, hidden: bool = False) -> float:
        return 1.0 if self.uniform(0, 1, hidden) < 0.5 else -1.0

    def permutation(self, n: int) -> list[int]:
        return torch.randperm(n, generator=self.g).tolist()


def _check_seed(seed: Any) -> int:
    try:
        value = int(seed)
    except (TypeError, ValueError):
        raise InputError(f"seed must be an integer, got {seed!r}") from None
    if not 0 <= value < 2**63 or value != seed:
        raise InputError(f"seed must be an integer in [0, 2**63), got {seed!r}")
    return value


def _rot_y(angle: torch.Tensor) -> torch.Tensor:
    """Rotation about +y (OpenCV: positive angle turns +z toward +x). angle `(...)` -> `(..., 3, 3)`."""
    c, s, o, z = angle.cos(), angle.sin(), torch.ones_like(angle), torch.zeros_like(angle)
    return torch.stack([c, z, s, z, o, z, -s, z, c], -1).view(*angle.shape, 3, 3)


def _rot_x(angle: torch.Tensor) -> torch.Tensor:
    c, s, o, z = angle.cos(), angle.sin(), torch.ones_like(angle), torch.zeros_like(angle)
    return torch.stack([o, z, z, z, c, -s, z, s, c], -1).view(*angle.shape, 3, 3)


def _orbit_c2w(yaw: torch.Tensor, pitch: torch.Tensor, pivot: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """Cameras `(T, 4, 4)` rotated by yaw/pitch `(T,)` about `pivot` (3,), then shifted by `offset` `(T, 3)`."""
    R = _rot_y(yaw) @ _rot_x(pitch)
    c2w = torch.eye(4, dtype=torch.float64).repeat(len(yaw), 1, 1)
    c2w[:, :3, :3] = R
    c2w[:, :3, 3] = pivot - R @ pivot + offset
    return c2w


def _sample_clip(seed: int, config: SynthConfig, resample: torch.Generator | None = None
                 ) -> tuple[dict[str, torch.Tensor], str, dict[str, Any]]:
    """Draw one scene: per-surface parameters and per-frame transforms `(T, ...)`, caption and meta.

    With `resample`, the motion parameters that neither frame 0 nor the caption fixes are redrawn from it (see
    `generate_siblings`).
    """
    d = _Draw(seed, resample)
    T, J, S = config.num_frames, MAX_OBJECTS, NUM_SURFACES
    tau = torch.linspace(0, 1, T, dtype=torch.float64)
    tan_half_h = math.tan(math.radians(config.fov_deg) / 2)
    tan_half_w = tan_half_h * config.width / config.height
    ground = d.uniform(0.9, 1.6)
    backdrop = d.uniform(7.0, 11.0)

    shape = torch.zeros(J, dtype=torch.long)
    active = torch.zeros(J, dtype=torch.bool)
    R = torch.eye(3, dtype=torch.float64).repeat(S, T, 1, 1)
    center = torch.zeros(S, T, 3, dtype=torch.float64)
    scale = torch.ones(S, T, 3, dtype=torch.float64)
    texture = torch.tensor([d.integer(len(TEXTURES)) for _ in range(S)])
    freq = torch.tensor([d.uniform(1.5, 3.5) for _ in range(S)], dtype=torch.float64)
    freq[GROUND:] *= 0.6
    phase = torch.tensor([[d.uniform(0, 10) for _ in range(3)] for _ in range(S)], dtype=torch.float64)
    color1 = torch.zeros(S, 3, dtype=torch.float64)
    for j in (GROUND, BACKDROP):
        color1[j] = torch.tensor(d.choice(BACKGROUND_COLORS))
    names = list(COLORS)
    order = d.permutation(len(names))

    n = config.min_objects + d.integer(config.max_objects - config.min_objects + 1)
    # `large_prob` and `closeup_prob` draw from streams of their own, so that they change no other clip
    stretch = _Draw(seed + 2**63)
    framing = _Draw((seed + 3 * 2**62) % 2**64)
    closeup = framing.uniform(0, 1) < config.closeup_prob
    subject_z = framing.uniform(*CLOSEUP_DEPTH)
    subject_frac = (framing.uniform(0.5, 0.9), framing.uniform(0.5, 1.0))  # height / view height, depth / height
    subject_at = (framing.uniform(-0.15, 0.15) * tan_half_w, framing.uniform(-0.15, 0.2) * tan_half_h)
    # parts: whether each other object is one, its size relative to the subject, where on the outline it sits
    parts = [(closeup and framing.uniform(0, 1) < config.part_prob, framing.uniform(0.3, 0.6),
              framing.uniform(0, 2 * math.pi), framing.uniform(-0.5, 0.5)) for _ in range(1, J)]
    carrier: tuple[tuple[float, ...], torch.Tensor, float] = ((1.0,) * 3, torch.ones(T, dtype=torch.float64), 0.0)
    objects = []
    for j in range(n):
        active[j] = True
        kind = d.integer(len(SHAPES))
        shape[j] = kind
        color1[j] = torch.tensor(COLORS[names[order[j]]])
        base = d.uniform(0.3, 0.55)
        size = {"ball": (base,) * 3, "capsule": (base * 1.3,) * 3,
                "box": (base * d.uniform(0.7, 1.2), base * d.uniform(0.7, 1.2), base * d.uniform(0.7, 1.2)),
                "cylinder": (base * d.uniform(0.6, 1.0), base * d.uniform(0.8, 1.4), base * d.uniform(0.6, 1.0)),
                }[SHAPES[kind]]
        large = stretch.uniform(0, 1) < config.large_prob
        factors = (stretch.uniform(1.5, 3.0), stretch.uniform(1.5, 3.0), stretch.uniform(1.0, 2.0))
        if large:
            size = tuple(a * f for a, f in zip(size, factors))
        z0 = d.uniform(*OBJECT_DEPTH)
        slot = (j + d.uniform(0.15, 0.85)) / n  # spread objects left to right
        x0 = (2 * slot - 1) * 0.6 * z0 * tan_half_w
        c0 = torch.tensor([x0, ground - size[1], z0], dtype=torch.float64)
        subject = closeup and j == 0
        part = j > 0 and parts[j - 1][0]
        if subject:  # the subject: centred, 50-90% of the view high, the others behind it
            grow = subject_frac[0] * subject_z * tan_half_h / size[1]
            size = (size[0] * grow, size[1] * grow, min(size[2] * grow * subject_frac[1], 0.5 * subject_z))
            z0 = subject_z
            c0 = torch.tensor([subject_at[0] * z0, subject_at[1] * z0, z0], dtype=torch.float64)
        elif part:  # half inside the subject's outline, half out, at its depth
            _, relative, at, dz = parts[j - 1]
            subject_size = carrier[0]
            size = tuple(relative * s for s in subject_size)
            out = 1 + relative / 2
            c0 = center[0, 0] + torch.tensor([math.cos(at) * out * subject_size[0],
                                              math.sin(at) * out * subject_size[1], dz * subject_size[2]],
                                             dtype=torch.float64)
            z0 = float(c0[2])
        elif closeup:
            c0[2] = z0 = max(z0, subject_z + 1.5)
        motion = "static" if d.uniform(0, 1) < config.static_prob else d.choice(MOTIONS[:-1])
        if closeup and not subject:
            motion = "static"
        lin = torch.zeros(3, dtype=torch.float64)
        bounce = orbit = spin = pulse = 0.0
        direction = ""
        if motion == "translate":
            direction = d.choice(("left", "right", "up", "down"))
            lo, hi = (0.6, 1.2) if direction in ("left", "right") else (0.5, 0.9)
            dist = d.uniform(lo, hi, hidden=direction != "down")  # a move down starts `dist` up: frame 0 shows it
            axis, sign = DIRECTION_AXES[direction]
            lin[axis] = sign * dist
            if direction == "down":
                c0[1] -= dist
        elif motion == "bounce":
            bounce = d.uniform(0.4, 0.8, hidden=True)
            direction = d.choice(("left", "right", "in place"))
            if direction != "in place":
                lin[0] = (1 if direction == "right" else -1) * d.uniform(0.5, 1.0, hidden=True)
        elif motion == "orbit":
            orbit = d.uniform(0.35, 0.6, hidden=True)
            direction = d.choice(("clockwise", "counterclockwise"))
        elif motion == "spin":
            spin = d.sign(hidden=True) * d.uniform(math.pi, 2 * math.pi, hidden=True)
        elif motion == "approach":
            lin[2] = -min(d.uniform(1.0, 1.8, hidden=True), z0 - 1.6)
        elif motion == "recede":
            lin[2] = d.uniform(1.5, 3.0, hidden=True)
        elif motion == "pulse":
            pulse = d.uniform(0.25, 0.4, hidden=True)
        n_bounce, n_pulse = 1 + d.integer(2, hidden=True), 1 + d.integer(2, hidden=True)
        theta0 = d.uniform(0, 2 * math.pi, hidden=True)
        yaw0 = d.uniform(0, 2 * math.pi)
        sweep = (1 if direction == "counterclockwise" else -1) * d.uniform(math.pi, 2 * math.pi, hidden=True)

        if subject:  # move the subject as far in the image as an object at the scenes' usual depth
            reach = subject_z / (sum(OBJECT_DEPTH) / 2)
            lin, bounce, orbit = lin * reach, bounce * reach, orbit * reach
        factor = 1 + pulse * torch.sin(2 * math.pi * n_pulse * tau)
        if part:  # carried by the subject: its turn, its pulse and its path
            factor, turn = carrier[1], _rot_y(carrier[2] * tau)
            scale[j] = torch.tensor(size, dtype=torch.float64) * factor[:, None]
            center[j] = center[0] + (turn @ (c0 - center[0, 0]) * factor[:, None])
            R[j] = turn @ _rot_y(torch.tensor(yaw0, dtype=torch.float64))
            objects.append({"shape": SHAPES[kind], "color": names[order[j]], "texture": TEXTURES[int(texture[j])],
                            **{k: objects[0][k] for k in ("motion", "direction")}, "part_of": 0})
            continue
        scale[j] = torch.tensor(size, dtype=torch.float64) * factor[:, None]
        center[j] = c0 + lin * tau[:, None]
        center[j, :, 1] -= bounce * torch.sin(math.pi * n_bounce * tau).abs()
        if pulse and direction == "" and not subject:  # keep a pulsing object on the ground
            center[j, :, 1] = ground - size[1] * factor
        angle = theta0 + sweep * tau
        center[j, :, 0] += orbit * (angle.cos() - math.cos(theta0))
        center[j, :, 2] += orbit * (angle.sin() - math.sin(theta0))
        R[j] = _rot_y(yaw0 + spin * tau)
        if subject:  # what its parts take: its size, pulse and spin
            carrier = (size, factor, spin)
        color_name = names[order[j]]
        objects.append({"shape": SHAPES[kind], "color": color_name, "texture": TEXTURES[int(texture[j])],
                        "motion": motion, "direction": direction})
    color2 = color1 * torch.tensor([d.uniform(0.35, 0.7) for _ in range(S)], dtype=torch.float64)[:, None]
    center[GROUND:] = 0.0
    center[GROUND, :, 1] = ground
    center[BACKDROP, :, 2] = backdrop

    # camera (frame 0 = identity) and novel views, as rotations about a pivot in the scene
    pivot = torch.tensor([0.0, 0.0, d.uniform(3.0, 4.5)], dtype=torch.float64)
    zero = torch.zeros(T, dtype=torch.float64)
    offset = torch.zeros(T, 3, dtype=torch.float64)
    cam_motion, cam_dir = "static", ""
    if d.uniform(0, 1) < config.camera_motion_prob:
        cam_motion = d.choice(CAMERA_MOTIONS[1:])
        sign = d.sign()
    if cam_motion == "pan":
        cam_dir = "right" if sign > 0 else "left"
        c2w = _orbit_c2w(sign * math.radians(d.uniform(8, 15)) * tau, zero, torch.zeros(3, dtype=torch.float64),
                         offset)
    elif cam_motion == "truck":
        cam_dir = "right" if sign > 0 else "left"
        offset[:, 0] = sign * d.uniform(0.3, 0.6) * tau
        c2w = _orbit_c2w(zero, zero, pivot, offset)
    elif cam_motion == "dolly":
        cam_dir = "forward" if sign > 0 else "backward"
        offset[:, 2] = sign * d.uniform(0.4, 0.9) * tau
        c2w = _orbit_c2w(zero, zero, pivot, offset)
    elif cam_motion == "orbit":
        cam_dir = "left" if sign > 0 else "right"
        c2w = _orbit_c2w(sign * math.radians(d.uniform(10, 20)) * tau, zero, pivot, offset)
    else:
        c2w = _orbit_c2w(zero, zero, pivot, offset)
    novel = []
    for _ in range(4):  # fixed count of draws so novel_views does not change the clip
        yaw = d.sign() * math.radians(d.uniform(10, 30)) + d.sign() * math.radians(d.uniform(5, 15)) * tau
        pitch = math.radians(d.uniform(-15, 4)) + zero
        novel.append(_orbit_c2w(yaw, pitch, pivot, offset * 0))
    light = torch.tensor([d.uniform(-0.6, 0.6), -1.0, d.uniform(-0.8, 0.1)], dtype=torch.float64)  # to the light

    params = {
        "active": active, "shape": shape, "R": R.float(), "center": center.float(), "scale": scale.float(),
        "texture": texture, "freq": freq.float(), "phase": phase.float(), "color1": color1.float(),
        "color2": color2.float(), "light": (light / light.norm()).float(),
        "ambient": torch.tensor(d.uniform(0.25, 0.45), dtype=torch.float32),
        "c2w": c2w.float(), "novel_c2w": torch.stack(novel).float(),
    }
    photo_params, photos = _sample_photos(d, config, active, shape, scale[:, 0], ground, backdrop, closeup,
                                          [p[0] for p in parts])
    params |= photo_params
    caption = _caption(d, config, objects, photos)
    if cam_motion != "static":
        caption += f" while {_camera_phrase(cam_motion, cam_dir)}"
    meta = {"source": "trajscene-synth", "seed": seed, "objects": objects,
            "camera_motion": cam_motion, "camera_direction": cam_dir,
            "camera_c2w": c2w.float().tolist(), "fov_deg": config.fov_deg,
            "ground_y": ground, "backdrop_z": backdrop, "photos": photos, "config": asdict(config)}
    return params, caption, meta


def _sample_photos(d: _Draw, config: SynthConfig, active: torch.Tensor, shape: torch.Tensor, size: torch.Tensor,
                   ground: float, backdrop: float, closeup: bool = False, parts: Sequence[bool] = ()
                   ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Which surfaces wear a photo and how it maps onto each (`size (S, 3)`: frame-0 half-extents). A close-up's
    subject always wears one, when photos are on, and its parts (`parts[j - 1]`) wear the same photo.

    Drawn after every other draw of the clip and a fixed number per surface, so `photo_prob` changes neither the
    rest of the clip nor which photo a surface gets. Texture coords (see `_photo_rgb`) are metres on the planes and
    box faces; around a curved object's axis they are radians, tiled an even number of times (mirrored tiles meet
    without a seam). Returns the params (photo -1 = the pattern) and {surface name: photo name} for the meta.
    """
    S = NUM_SURFACES
    photo = torch.full((S,), -1, dtype=torch.long)
    crop = torch.zeros(S, 4, dtype=torch.float64)  # x0, y0, w, h in normalised photo coords
    mapping = torch.ones(S, 4, dtype=torch.float64)  # origin u, v and tile u, v: texture coords are (uv - origin) / tile
    tint = torch.ones(S, 3, dtype=torch.float64)
    names = {}
    tan_half_h = math.tan(math.radians(config.fov_deg) / 2)
    tan_half_w = tan_half_h * config.width / config.height
    for j in range(S):
        part = 1 <= j <= len(parts) and parts[j - 1]
        worn = d.uniform(0, 1) < config.photo_prob or ((closeup and j == 0 or part) and config.photo_prob > 0)
        k = d.integer(len(TRAINING_PHOTOS))
        k = int(photo[0]) if part else k
        zoom, cx, cy, scale, pu, pv, flip = (d.uniform(0, 1) for _ in range(7))
        gain = [d.uniform(0.55, 1.0) for _ in range(3)]
        if not worn or (j < MAX_OBJECTS and not active[j]):
            continue
        h_px, w_px = photo_sizes()[k]
        if j == BACKDROP:  # the photo fills the backdrop seen from camera 0 (up to 1.3x), so frames look like photos
            view_u, view_v = 2 * backdrop * tan_half_w, ground + backdrop * tan_half_h
            tile_u, tile_v = view_u * (1 + 0.3 * scale), view_v * (1 + 0.3 * scale)
            w = min(1.0, tile_u / tile_v * h_px / w_px) * (0.6 + 0.4 * zoom)  # crop of the tile's aspect
            h = w * w_px / h_px * tile_v / tile_u
            origin_u = -backdrop * tan_half_w - pu * (tile_u - view_u) - (tile_u if flip < 0.5 else 0.0)
            origin_v = -backdrop * tan_half_h - pv * (tile_v - view_v)
        else:
            side = (0.35 + 0.65 * zoom) * min(h_px, w_px)
            w, h = side / w_px, side / h_px
            tile_u = tile_v = 2 + 3 * scale if j == GROUND else (1 + 2 * scale) * float(size[j].mean())
            if j < MAX_OBJECTS and SHAPES[int(shape[j])] != "box":
                radius = float(size[j, 0] + size[j, 2]) / 2 * (CAPSULE_RADIUS if SHAPES[int(shape[j])] == "capsule"
                                                                else 1.0)
                tile_u = math.pi / max(1, round(math.pi * radius / tile_v))
            origin_u, origin_v = -2 * pu * tile_u, -2 * pv * tile_v
        photo[j] = k
        crop[j] = torch.tensor([cx * (1 - w), cy * (1 - h), w, h])
        mapping[j] = torch.tensor([origin_u, origin_v, tile_u, tile_v])
        if is_grayscale(TRAINING_PHOTOS[k]):
            tint[j] = torch.tensor(gain)
        names[{GROUND: "ground", BACKDROP: "backdrop"}.get(j, f"object{j}")] = TRAINING_PHOTOS[k]
    return {"photo": photo, "photo_crop": crop.float(), "photo_map": mapping.float(), "photo_tint": tint.float()}, names


def _caption(d: _Draw, config: SynthConfig, objects: list[dict[str, str]], photos: dict[str, str]) -> str:
    """One phrase per object, "a red ball moves up" ("a textured ball" when it wears a photo: its colour is gone).

    With `config.unnamed_prob`, a clip in which all objects but one stay still says only "the <everyday noun>
    <motion>" of the one that moves, as users describe their photos, so that a prompt naming something the scenes
    never show still moves the object that stands out. Both draws are always made, and last, so `unnamed_prob`
    changes nothing else.
    """
    unnamed = d.uniform(0, 1) < config.unnamed_prob
    noun = d.choice(EVERYDAY_NOUNS)
    named = [(j, o) for j, o in enumerate(objects) if "part_of" not in o]  # a part moves with what it belongs to
    moving = [o for _, o in named if o["motion"] != "static"]
    if unnamed and len(moving) == 1:
        return f"the {noun} {_motion_phrase(moving[0]['motion'], moving[0]['direction'])}"
    phrases = []
    for j, o in named:
        adjective = "textured" if f"object{j}" in photos else o["color"]
        article = "an" if adjective[0] in "aeiou" else "a"
        phrases.append(f"{article} {adjective} {o['shape']} {_motion_phrase(o['motion'], o['direction'])}")
    return " and ".join(phrases)


def _motion_phrase(motion: str, direction: str) -> str:
    """Short fixed phrases (a caption stays under 32 words for the tiny word-level text encoder)."""
    return {"translate": f"moves {direction}", "bounce": f"bounces {direction}", "orbit": f"circles {direction}",
            "spin": "spins", "approach": "moves closer", "recede": "moves away", "pulse": "pulses",
            "static": "stays still"}[motion]


def _camera_phrase(motion: str, direction: str) -> str:
    return {"pan": f"the camera pans {direction}", "truck": f"the camera moves {direction}",
            "dolly": f"the camera moves {direction}", "orbit": f"the camera orbits {direction}"}[motion]


# ----------------------------------------------------------------------------------------------------------
# 2) Ray casting (device, batched over clips and frames)
# ----------------------------------------------------------------------------------------------------------


def _camera_rays(K: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """Ray directions `(3, N)` in camera coords with z = 1 (so the ray parameter is z-depth)."""
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float32, device=K.device) + PIXEL_CENTER,
                          torch.arange(W, dtype=torch.float32, device=K.device) + PIXEL_CENTER, indexing="ij")
    x = (u.reshape(-1) - K[0, 2]) / K[0, 0]
    y = (v.reshape(-1) - K[1, 2]) / K[1, 1]
    return torch.stack([x, y, torch.ones_like(x)])


def _apply(M: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """`M (..., 3, 3) @ v (..., 3, N)` as explicit sums (no TF32, same rounding order on CPU and CUDA)."""
    return M[..., :, 0:1] * v[..., 0:1, :] + M[..., :, 1:2] * v[..., 1:2, :] + M[..., :, 2:3] * v[..., 2:3, :]


def _quadratic(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Nearer root of a t^2 + 2 b t + c (inf where none)."""
    disc = b * b - a * c
    t = (-b - disc.clamp_min(0).sqrt()) / a
    return torch.where((disc > 0) & (t > _EPS), t, math.inf)


def _hit_ball(o: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Unit sphere; origins `o (..., 3, 1)`, directions `d (..., 3, N)` in local coords -> t `(..., N)`."""
    dx, dy, dz = d.unbind(-2)
    ox, oy, oz = o.unbind(-2)
    return _quadratic(dx * dx + dy * dy + dz * dz, ox * dx + oy * dy + oz * dz, (o * o).sum(-2) - 1)


def _hit_box(o: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    inv = d.reciprocal()
    t1 = (-1 - o) * inv
    t2 = (1 - o) * inv
    near = torch.minimum(t1, t2).amax(-2)
    far = torch.maximum(t1, t2).amin(-2)
    return torch.where((far >= near) & (near > _EPS), near, math.inf)


def _hit_side_and_caps(o: torch.Tensor, d: torch.Tensor, radius: float, half: float) -> torch.Tensor:
    """Open cylinder of `radius` about y with |y| <= `half`."""
    dx, dy, dz = d.unbind(-2)
    ox, oy, oz = o.unbind(-2)
    t = _quadratic(dx * dx + dz * dz, ox * dx + oz * dz, ox * ox + oz * oz - radius * radius)
    return torch.where((oy + t * dy).abs() <= half, t, math.inf)


def _hit_cylinder(o: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    side = _hit_side_and_caps(o, d, 1.0, 1.0)
    dx, dy, dz = d.unbind(-2)
    ox, oy, oz = o.unbind(-2)
    t = (-torch.sign(dy) - oy) / dy
    x, z = ox + t * dx, oz + t * dz
    cap = torch.where((x * x + z * z <= 1) & (t > _EPS), t, math.inf)
    return torch.minimum(side, cap)


CAPSULE_RADIUS = 0.5  # local capsule: segment |y| <= 1 - r on the y axis, radius r; extents [-1, 1] in y


def _hit_capsule(o: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    r, h = CAPSULE_RADIUS, 1 - CAPSULE_RADIUS
    t = _hit_side_and_caps(o, d, r, h)
    dx, dy, dz = d.unbind(-2)
    a = dx * dx + dy * dy + dz * dz
    ox, oy, oz = o.unbind(-2)
    for cy in (-h, h):
        b = ox * dx + (oy - cy) * dy + oz * dz
        t = torch.minimum(t, _quadratic(a, b, ox * ox + (oy - cy) ** 2 + oz * oz - r * r))
    return t


_HITS = (_hit_ball, _hit_box, _hit_cylinder, _hit_capsule)


def _local_normal(p: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
    """Outward normals `(K, 3)` (unnormalised) of local hit points `p (K, 3)` on shapes `(K,)`."""
    ball = p
    box = torch.zeros_like(p).scatter_(1, p.abs().argmax(1, keepdim=True), 1.0) * p.sign()
    radial = p * torch.tensor([1.0, 0.0, 1.0], device=p.device)
    is_cap = p[:, 1].abs() > radial.norm(dim=1)
    cylinder = torch.where(is_cap[:, None], torch.zeros_like(p).index_fill_(1, torch.tensor([1], device=p.device),
                                                                           1.0) * p.sign(), radial)
    h = 1 - CAPSULE_RADIUS
    capsule = p - torch.zeros_like(p).index_copy_(1, torch.tensor([1], device=p.device), p[:, 1:2].clamp(-h, h))
    options = torch.stack([ball, box, cylinder, capsule])  # (4, K, 3)
    return options.gather(0, shape[None, :, None].expand(1, -1, 3))[0]


def _pattern(q: tuple[torch.Tensor, torch.Tensor, torch.Tensor], texture: torch.Tensor) -> torch.Tensor:
    """Texture weight in [0, 1] at scaled texture coords `q` (3 broadcastable tensors); `texture` holds
    TEXTURES indices broadcastable to them. Only the kinds present are computed."""
    qx, qy, qz = q
    out = None
    for kind in texture.unique().tolist():
        if kind == 0:  # checker
            w = (qx.floor() + qy.floor() + qz.floor()).remainder_(2)
        elif kind == 1:  # stripes
            w = (qx + qy + 0.5 * qz).floor_().remainder_(2)
        else:  # smooth noise
            w = (torch.sin(2.1 * qx + 1.3 * torch.sin(1.7 * qz)) + torch.sin(1.9 * qy + 1.1 * torch.sin(2.3 * qx)))
            w = w.mul_(0.25).add_(0.5)
        out = w if out is None else torch.where(texture == kind, w, out)
    return out


_BOUND = (1.0, math.sqrt(3.0), math.sqrt(2.0), 1.0)  # bounding-sphere radius of each local unit shape


def _object_crops(center: torch.Tensor, radius: torch.Tensor, c2w: torch.Tensor, K: torch.Tensor,
                  H: int, W: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel windows covering bounding spheres (centre `(b, T, 3)`, radius `(b, T)`) seen from `c2w (b, T, 4, 4)`.

    One window size per call (the largest needed), placed per frame. Returns flat pixel indices `(b, T, h*w)`
    and a mask `(b, T)` of frames whose sphere is in front of the camera and overlaps the image.
    """
    Rc, oc = c2w[..., :3, :3], c2w[..., :3, 3]
    cam = ((center - oc)[..., None, :] @ Rc)[..., 0, :]  # R^T (c - o)
    z, r = cam[..., 2], radius
    front = z - r > 0.05
    zn, zf = (z - r).clamp_min(0.05), z + r
    bounds = []
    for axis, f, cen, size in ((0, K[0, 0], K[0, 2], W), (1, K[1, 1], K[1, 2], H)):
        lo = torch.minimum((cam[..., axis] - r) / zn, (cam[..., axis] - r) / zf) * f + cen - PIXEL_CENTER
        hi = torch.maximum((cam[..., axis] + r) / zn, (cam[..., axis] + r) / zf) * f + cen - PIXEL_CENTER
        lo = torch.where(front, lo.floor() - 1, torch.zeros_like(lo)).clamp(0, size - 1)
        hi = torch.where(front, hi.ceil() + 1, torch.full_like(hi, size - 1)).clamp(-1, size - 1)
        bounds.append((lo.long(), hi.long()))
    (x0, x1), (y0, y1) = bounds
    seen = (x1 >= x0) & (y1 >= y0)
    w = int((x1 - x0 + 1)[seen].max()) if seen.any() else 1
    h = int((y1 - y0 + 1)[seen].max()) if seen.any() else 1
    x0, y0 = x0.clamp(max=W - w), y0.clamp(max=H - h)
    dy = torch.arange(h, device=center.device)[:, None] * W
    dx = torch.arange(w, device=center.device)[None, :]
    idx = ((y0 * W + x0)[..., None, None] + dy + dx).flatten(-2)
    return idx, seen


def _render(p: dict[str, torch.Tensor], c2w: torch.Tensor, rays: torch.Tensor, K: torch.Tensor, H: int, W: int
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ray-cast all clips/frames from cameras `c2w (B, T, 4, 4)` with camera rays `(3, N)` (z = 1).

    Returns rgb `(B, T, N, 3)` float, z-depth `(B, T, N)` (0 on a miss) and surface ids `(B, T, N)` int8
    (objects 0..3, GROUND, BACKDROP, MISS).
    """
    B, T = c2w.shape[:2]
    N = rays.shape[1]
    # 1) static planes: once per clip when its camera does not move, else per frame
    moving = (c2w != c2w[:, :1]).flatten(1).any(1)  # (B,)
    frames = torch.where(moving[:, None], torch.arange(T, device=c2w.device), 0)  # (B, T) frame to render
    todo = (frames == torch.arange(T, device=c2w.device)).view(-1).nonzero()[:, 0]  # rows of B*T to render
    row = torch.zeros(B * T, dtype=torch.long, device=c2w.device)
    row[todo] = torch.arange(len(todo), device=c2w.device)
    pick = row.view(B, T).gather(1, frames).view(-1)
    depth, ids, rgb = (x.index_select(0, pick) for x in _render_planes(p, c2w.reshape(B * T, 4, 4)[todo], todo // T,
                                                                      rays, K[0, 0]))
    flat_depth, flat_ids = depth.view(-1), ids.view(-1)

    # 2) objects, inside per-frame windows around their bounding spheres
    Rc, oc = c2w[..., :3, :3], c2w[..., :3, 3]
    drawn = []
    for j in range(MAX_OBJECTS):
        for kind in p["shape"][:, j][p["active"][:, j]].unique().tolist():
            sel = (p["active"][:, j] & (p["shape"][:, j] == kind)).nonzero()[:, 0]
            R, c, s = p["R"][sel, j], p["center"][sel, j], p["scale"][sel, j]
            idx, seen = _object_crops(c, _BOUND[kind] * s.amax(-1), c2w[sel], K, H, W)
            Rt = R.transpose(-1, -2)
            o_local = (Rt @ (oc[sel] - c)[..., None]) / s[..., None]  # (b, T, 3, 1)
            crop_rays = rays.index_select(1, idx.view(-1)).view(3, *idx.shape).permute(1, 2, 0, 3)  # (b, T, 3, hw)
            d_local = _apply((Rt @ Rc[sel]) / s[..., None], crop_rays)
            t = torch.where(seen[..., None], _HITS[kind](o_local, d_local), math.inf).view(-1)
            gidx = ((sel[:, None] * T + torch.arange(T, device=idx.device))[..., None] * N + idx).view(-1)
            nearer = t < flat_depth.take(gidx)
            gidx = gidx[nearer]
            flat_depth[gidx] = t[nearer]
            flat_ids[gidx] = j
            drawn.append((j, gidx))
    miss = ~torch.isfinite(flat_depth)
    flat_depth.masked_fill_(miss, 0.0)

    # 3) object shading on the pixels each object won
    rgb_flat = rgb.view(B * T, 3, N)
    Rc_flat, oc_flat = Rc.reshape(-1, 3, 3), oc.reshape(-1, 3)
    for j, gidx in drawn:
        gidx = gidx[flat_ids[gidx] == j]
        if gidx.numel() == 0:
            continue
        bt, n = gidx // N, gidx % N
        b = bt // T
        R = p["R"][:, j].reshape(-1, 3, 3)[bt]
        s = p["scale"][:, j].reshape(-1, 3)[bt]
        ray = torch.einsum("kij,jk->ki", Rc_flat[bt], rays[:, n])
        x = oc_flat[bt] + flat_depth[gidx, None] * ray
        local = torch.einsum("ki,kij->kj", x - p["center"][:, j].reshape(-1, 3)[bt], R) / s
        normal = F.normalize(torch.einsum("kij,kj->ki", R, _local_normal(local, p["shape"][b, j]) / s), dim=1)
        cos = (normal * p["light"][b]).sum(1).clamp_min(0)
        q = (local * p["freq"][b, j, None] + p["phase"][b, j]).unbind(1)
        w = _pattern(q, p["texture"][b, j])[:, None]
        color = torch.lerp(p["color1"][b, j], p["color2"][b, j], w)
        worn = p["photo"][b, j] >= 0
        if worn.any():
            bw, ray = b[worn], ray[worn]
            uv = _object_uv(local[worn], p["shape"][bw, j], p["scale"][bw, j, 0], p["photo_map"][bw, j])
            view_cos = (normal[worn] * ray).sum(1).abs() / ray.norm(dim=1)
            color[worn] = _photo_rgb(p, bw, j, uv, flat_depth[gidx[worn]] / (K[0, 0] * _obliquity(view_cos)))
        rgb_flat[bt, :, n] = color * _lambert(p["ambient"][b], cos)[:, None]
    return rgb.view(B, T, 3, N).transpose(2, 3), depth.view(B, T, N), ids.view(B, T, N)


def _render_planes(p: dict[str, torch.Tensor], c2w: torch.Tensor, clip: torch.Tensor, rays: torch.Tensor,
                   focal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ground and backdrop seen from cameras `c2w (U, 4, 4)` of clips `clip (U,)` (`focal`: K[0, 0], for photos).

    Returns depth `(U, N)` (inf on a miss), ids `(U, N)` int8, rgb `(U, 3, N)`.
    """
    U = c2w.shape[0]
    Rc, oc = c2w[:, :3, :3], c2w[:, :3, 3:]
    d = _apply(Rc, rays)  # (U, 3, N)
    center = p["center"][clip, :, 0]  # (U, S, 3)
    t_ground = (center[:, GROUND, 1:2] - oc[:, 1]) / d[:, 1]
    t_back = (center[:, BACKDROP, 2:3] - oc[:, 2]) / d[:, 2]
    t_ground = torch.where(t_ground > _EPS, t_ground, math.inf)
    t_back = torch.where(t_back > _EPS, t_back, math.inf)
    is_ground = t_ground <= t_back
    depth = torch.where(is_ground, t_ground, t_back)
    x = oc + depth.nan_to_num(posinf=0.0)[:, None] * d  # (U, 3, N) world hit points
    weight, base, delta, shades = [], [], [], []
    for j, axis in ((GROUND, 1), (BACKDROP, 2)):
        q = (x * p["freq"][clip, j].view(U, 1, 1) + p["phase"][clip, j].view(U, 3, 1)).unbind(1)
        weight.append(_pattern(q, p["texture"][clip, j].view(U, 1)))
        shade = _lambert(p["ambient"][clip], (-p["light"][clip, axis]).clamp_min(0)).view(U, 1, 1)
        base.append(p["color1"][clip, j].view(U, 3, 1) * shade)
        delta.append((p["color2"][clip, j] - p["color1"][clip, j]).view(U, 3, 1) * shade)
        shades.append(shade.view(U))
    w = torch.where(is_ground, *weight)[:, None]
    g = is_ground[:, None]
    rgb = torch.where(g, *base).addcmul_(w, torch.where(g, *delta))
    miss = ~torch.isfinite(depth)
    worn = torch.where(is_ground, p["photo"][clip, GROUND, None], p["photo"][clip, BACKDROP, None]) >= 0
    worn &= ~miss
    if worn.any():
        u, n = worn.nonzero(as_tuple=True)
        on_ground = is_ground[u, n]
        hit, ray = x[u, :, n], d[u, :, n]  # (K, 3)
        uv = torch.where(on_ground[:, None], torch.stack([hit[:, 0], -hit[:, 2]], 1), hit[:, :2])  # photo up = far
        view_cos = torch.where(on_ground, ray[:, 1], ray[:, 2]).abs() / ray.norm(dim=1)
        j = torch.where(on_ground, GROUND, BACKDROP)
        texel = _photo_rgb(p, clip[u], j, uv, depth[u, n] / (focal * _obliquity(view_cos)))
        rgb[u, :, n] = texel * torch.where(on_ground, shades[0][u], shades[1][u])[:, None]
    ids = torch.where(is_ground, GROUND, BACKDROP).to(torch.int8).masked_fill_(miss, MISS)
    if miss.any():
        rgb = torch.where(miss[:, None], torch.tensor(SKY, device=rgb.device).view(3, 1), rgb)
    return depth, ids, rgb


def _lambert(ambient: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
    return ambient + (1 - ambient) * cos


def _object_uv(local: torch.Tensor, shape: torch.Tensor, size: torch.Tensor, mapping: torch.Tensor) -> torch.Tensor:
    """Photo texture coords `(K, 2)` of local hit points `(K, 3)` on shapes `(K,)` with frame-0 half-extents `size`
    `(K, 3)` (material-fixed: a pulsing object's photo stretches with it): across the face on a box, around the axis
    (radians) and along it on the other shapes, across the cap on a cylinder's caps. `mapping` `(K, 4)` as in
    `_sample_photos`; second coord down = photo rows down."""
    metric = local * size
    axis = local.abs().argmax(1, keepdim=True)
    box = torch.where(axis == 0, metric[:, [2, 1]], torch.where(axis == 1, metric[:, [0, 2]], metric[:, [0, 1]]))
    around = torch.stack([torch.atan2(local[:, 0], local[:, 2]), metric[:, 1]], 1)
    # cylinder caps are planar (metres on both axes): u is scaled so that dividing it by the radian tile_u divides
    # the metric coord by tile_v
    cap = metric[:, [0, 2]] * torch.stack([mapping[:, 2] / mapping[:, 3], torch.ones_like(mapping[:, 3])], 1)
    is_cap = (shape == SHAPES.index("cylinder")) & (local[:, 1].abs() > local[:, [0, 2]].norm(dim=1))
    return torch.where((shape == SHAPES.index("box"))[:, None], box, torch.where(is_cap[:, None], cap, around))


def _obliquity(view_cos: torch.Tensor) -> torch.Tensor:
    """Divisor of a pixel's footprint (z / f) on a surface seen at `view_cos` to its normal: the footprint's sides
    are z / f and z / (f cos); their geometric mean picks a mip level that neither aliases nor blurs receding planes
    as much as the shorter or the longer side would."""
    return view_cos.clamp_min(0.05).sqrt()


def _photo_rgb(p: dict[str, torch.Tensor], b: torch.Tensor, j: torch.Tensor | int, uv: torch.Tensor,
               footprint: torch.Tensor) -> torch.Tensor:
    """Photo colours `(K, 3)` of surfaces `j` of clips `b (K,)` at texture coords `uv (K, 2)` seen with pixel
    footprints `(K,)` in metres (the mip level), tinted, before shading. Mirrored repeats tile the crop seamlessly."""
    bank = photo_bank(uv.device)
    k, crop, mapping = p["photo"][b, j], p["photo_crop"][b, j], p["photo_map"][b, j]
    t = (uv - mapping[:, :2]) / mapping[:, 2:]
    f = 1 - (t.remainder(2) - 1).abs()
    texels_per_metre = crop[:, 3] * bank.height[k, 0] / mapping[:, 3]
    level = (footprint * texels_per_metre).clamp_min(1).log2()
    return bank.sample(k, crop[:, 0] + f[:, 0] * crop[:, 2], crop[:, 1] + f[:, 1] * crop[:, 3], level) \
        * p["photo_tint"][b, j]


# ----------------------------------------------------------------------------------------------------------
# 3) Ground-truth tracks and visibility
# ----------------------------------------------------------------------------------------------------------


def _trajectories(p: dict[str, torch.Tensor], ids0: torch.Tensor, hits0: torch.Tensor) -> torch.Tensor:
    """3D trajectories `(B, T, N, 3)` of frame-0 hit points `hits0 (B, N, 3)` on surfaces `ids0 (B, N)`."""
    B, N = ids0.shape
    T = p["R"].shape[2]
    points = hits0[:, None].expand(B, T, N, 3).contiguous()  # background stays put
    for j in range(MAX_OBJECTS):
        b, n = (ids0 == j).nonzero(as_tuple=True)
        if b.numel() == 0:
            continue
        R, c, s = p["R"][b, j], p["center"][b, j], p["scale"][b, j]  # (K, T, ...)
        local = torch.einsum("ki,kij->kj", hits0[b, n] - c[:, 0], R[:, 0]) / s[:, 0]
        points[b, :, n] = c + torch.einsum("ktij,ktj->kti", R, local[:, None] * s)
    return points


def _visibility(points: torch.Tensor, c2w: torch.Tensor, depth: torch.Tensor, K: torch.Tensor,
                H: int, W: int) -> torch.Tensor:
    """Visibility `(B, T, N)`: in front of camera t, inside the image, not behind the frame-t depth map.

    Occluded means all 4 depth samples around the projection are nearer than the point (exact for planar
    surfaces since 1/z is affine in the image), up to `VIS_REL_TOL`.
    """
    B, T, N, _ = points.shape
    Rc, oc = c2w[..., :3, :3], c2w[..., :3, 3]
    cam = torch.einsum("btni,btij->btnj", points - oc[:, :, None], Rc)  # R^T (x - o)
    z = cam[..., 2]
    zs = z.clamp_min(_EPS)
    u = K[0, 0] * cam[..., 0] / zs + K[0, 2]
    v = K[1, 1] * cam[..., 1] / zs + K[1, 2]
    inside = (z > _EPS) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
    # farthest of the 2x2 depth samples around each position: max-pool once, then one gather
    far = torch.where(depth > 0, depth, math.inf).view(B * T, 1, H, W)
    far = F.pad(far, (0, 1, 0, 1), mode="replicate")
    far = torch.maximum(torch.maximum(far[..., :-1, :-1], far[..., :-1, 1:]),
                        torch.maximum(far[..., 1:, :-1], far[..., 1:, 1:])).view(B, T, H * W)
    u0 = (u - PIXEL_CENTER).floor().clamp(0, W - 1).long()
    v0 = (v - PIXEL_CENTER).floor().clamp(0, H - 1).long()
    nearest_far = far.gather(2, v0 * W + u0)
    return inside & (z <= nearest_far * (1 + VIS_REL_TOL))
