"""Videos of evaluation episodes (`--capture-video`): headless rendering and MP4 files.

The frames come from evaluation copy 0 while `envs.evaluate` plays its episode (the same policy calls, so a run
records exactly the episode it evaluated and its numbers do not change). Rendering needs no display:
classic control draws with pygame into a surface; MuJoCo renders offscreen through EGL (`MUJOCO_GL=egl`, the
default set here when none is chosen; Debian packages `libegl1` and `libgl1-mesa-dri` give a software renderer) or
OSMesa (`MUJOCO_GL=osmesa`, package `libosmesa6`); Atari frames are the emulator's screen; MinAtar's grids are
drawn in colour and enlarged. Files are H.264 MP4 (yuv420p), which browsers and W&B play, written with imageio's
ffmpeg (the `video` extra installs pygame and imageio-ffmpeg).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

VIDEO_FPS = 30
"""playback rate; envs that step faster (MuJoCo: 125 steps/s) record every k-th frame so playback is real time"""
MUJOCO_SIZE = 256
"""width and height of MuJoCo frames (software rendering costs per frame; 256 px reads well in a report)"""
MIN_SIDE = 160
"""tiny frames (MinAtar's 10 x 10 grids) are enlarged, nearest-neighbour, to at least this many pixels a side"""


class RenderingUnavailable(ValueError):
    """This machine cannot render the env headless; the message says what to install."""


def render_kwargs(entry_point: str) -> dict[str, Any]:
    """What `gym.make` needs to return frames from `render()` for an env registered with `entry_point`."""
    if "mujoco" in entry_point:
        if not os.environ.get("DISPLAY") and not os.environ.get("MUJOCO_GL"):
            os.environ["MUJOCO_GL"] = "egl"  # read when the first MuJoCo renderer is made
        return {"render_mode": "rgb_array", "width": MUJOCO_SIZE, "height": MUJOCO_SIZE}
    return {"render_mode": "rgb_array"}


def frame_skip(render_fps: float | None) -> int:
    """Record every k-th step so that playback at VIDEO_FPS is about real time."""
    return max(1, round((render_fps or VIDEO_FPS) / VIDEO_FPS))


def as_frame(image: Any) -> np.ndarray:
    """An RGB uint8 frame (H, W, 3) with even sides (H.264's yuv420p needs them), from what `render()` returned:
    uint8 or float in [0, 1], grey or colour; tiny frames enlarged."""
    frame = np.asarray(image)
    if frame.dtype != np.uint8:
        frame = (np.clip(frame, 0.0, 1.0) * 255).astype(np.uint8)
    if frame.ndim == 2:
        frame = np.repeat(frame[:, :, None], 3, axis=2)
    scale = -(-MIN_SIDE // min(frame.shape[:2]))  # ceil
    if scale > 1:
        frame = frame.repeat(scale, axis=0).repeat(scale, axis=1)
    return frame[: frame.shape[0] // 2 * 2, : frame.shape[1] // 2 * 2, :3]


def write_video(path: Path, frames: list[np.ndarray], fps: float = VIDEO_FPS) -> Path:
    """Write `frames` (RGB uint8, all one size) as an H.264 MP4, atomically (a killed run leaves no torn file)."""
    import imageio.v2 as imageio

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    writer = imageio.get_writer(tmp, fps=fps, codec="libx264", pixelformat="yuv420p", macro_block_size=1)
    try:
        for frame in frames:
            writer.append_data(frame)
    finally:
        writer.close()
    os.replace(tmp, path)
    return path


def rendering_hint(family: str) -> str:
    """What to install so that an env of `family` renders without a display."""
    if family == "mujoco":
        return (
            "MuJoCo renders offscreen with MUJOCO_GL=egl (apt install libegl1 libgl1-mesa-dri) or MUJOCO_GL=osmesa "
            f"(apt install libosmesa6); MUJOCO_GL is {os.environ.get('MUJOCO_GL')!r} here."
        )
    if family in ("classic_control", "box2d", "toy_text"):
        return "Classic control draws with pygame: pip install 'rlgrid[video]'."
    return "Install the env's rendering dependencies (pip install 'rlgrid[video]')."
