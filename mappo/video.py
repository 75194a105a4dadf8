"""Render a deterministic episode of a trained policy to MP4 (imageio-ffmpeg) or GIF."""
from __future__ import annotations

import os
import sys
from typing import Any, Callable, List

import numpy as np

from .files import written_atomically


def render_env_fn(env_fn: Callable[..., Any]) -> Callable[[], Any]:
    """A factory for one env that renders ``rgb_array`` frames: ``env_fn(render_mode="rgb_array")``
    (PettingZoo's convention; registry factories pass it on), or plain ``env_fn()`` when it takes
    no such argument, in which case the env must already render ``rgb_array``."""

    def make() -> Any:
        try:
            return env_fn(render_mode="rgb_array")
        except TypeError:
            return env_fn()

    return make


def record(policy: Any, env_fn: Any, seed: int = 0, max_steps: int = 10_000) -> List[np.ndarray]:
    """Frames ``[H, W, 3] uint8`` of one deterministic episode on an env from the trainer's
    ``env_fn``: a PettingZoo factory through :func:`record_episode`; a batched builder
    (``mappo.Batched``) through its vector env's ``record_episode(policy, max_steps)``, where the
    family has one (``envs/jaxmarl.py``: the MPE scenarios)."""
    from .protocol import Batched

    if not isinstance(env_fn, Batched):
        return record_episode(policy, render_env_fn(env_fn), seed, max_steps)
    vec = env_fn(num_envs=1, device=policy.device, seed=seed)
    try:
        recorder = getattr(vec, "record_episode", None)
        if recorder is None:
            raise ValueError(f"{env_fn!r} does not render videos (its vector env has no record_episode)")
        return recorder(policy, max_steps)
    finally:
        vec.close()


def record_episode(policy: Any, env_fn: Callable[[], Any], seed: int = 0, max_steps: int = 10_000) -> List[np.ndarray]:
    """Frames ``[H, W, 3] uint8`` of one episode with the policy acting deterministically."""
    from .vector import make_parallel

    env = make_parallel(env_fn())
    try:
        if getattr(env, "render_mode", None) != "rgb_array":
            raise ValueError(f"env {type(env).__name__} has render_mode={getattr(env, 'render_mode', None)!r}; "
                             "a video needs an env built with render_mode='rgb_array'")
        obs, infos = env.reset(seed=seed)
        policy.reset()
        frames = [np.asarray(env.render())]
        for _ in range(max_steps):
            if not env.agents:
                break
            actions = policy.act(obs, deterministic=True, infos=infos)
            obs, _, _, _, infos = env.step(actions)
            frames.append(np.asarray(env.render()))
    finally:
        env.close()
    if frames[0] is None or frames[0].ndim != 3:
        raise ValueError("env.render() did not return rgb_array frames")
    return frames


def free_path(path: str) -> str:
    """``path`` itself when nothing is there, else the first free ``<root>-<n><ext>``."""
    root, ext = os.path.splitext(path)
    n = 1
    while os.path.exists(path):
        path, n = f"{root}-{n}{ext}", n + 1
    return path


def write_video(frames: List[np.ndarray], path: str, fps: int = 10) -> str:
    """Write ``frames`` to ``path`` (.mp4 or .gif); returns the path written.

    MP4 needs imageio-ffmpeg (``pip install imageio-ffmpeg``, or the ``video`` extra); without it
    the video is written as GIF next to the requested path, under a name no file has yet (a GIF
    the user did not ask for never replaces one), and a message names it.  The file is written
    whole or not at all.
    """
    import imageio

    root, ext = os.path.splitext(path)
    ext = ext.lower()
    if ext not in (".mp4", ".gif"):
        raise ValueError(f"video path must end in .mp4 or .gif, got {path!r}")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if ext == ".mp4":
        try:
            import imageio_ffmpeg  # noqa: F401
        except ImportError:
            path, ext = free_path(root + ".gif"), ".gif"
            print(f"imageio-ffmpeg is not installed (pip install imageio-ffmpeg), so MP4 cannot be written; "
                  f"writing a GIF instead: {path}", file=sys.stderr)
    with written_atomically(path) as tmp:
        if ext == ".mp4":
            # macro_block_size=1: keep odd frame sizes as they are instead of resizing with a warning
            imageio.mimsave(tmp, frames, fps=fps, macro_block_size=1)
        else:
            imageio.mimsave(tmp, frames, duration=1000 / fps, loop=0)
    return path
