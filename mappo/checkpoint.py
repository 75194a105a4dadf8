"""Checkpoints: plain tensors and containers only, written atomically, loaded with weights_only=True.

A checkpoint carries a SHA-256 digest of its contents (``checksum``), checked on load, so a
flipped byte inside tensor data is an error rather than silently different weights.  Files are
fsynced before the rename and get the same mode as the run's other files.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from typing import Any, Dict, Optional

import torch


def digest(payload: Any) -> str:
    """SHA-256 over a checkpoint's contents: every tensor's dtype, shape and bytes and every other
    value's repr, walked in a fixed order (dict keys sorted), leaving out the ``checksum`` key."""
    h = hashlib.sha256()

    def walk(x: Any) -> None:
        if isinstance(x, dict):
            for k in sorted(x, key=str):
                if k != "checksum":
                    h.update(f"<{k!r}>".encode())
                    walk(x[k])
        elif isinstance(x, (list, tuple)):
            h.update(f"[{len(x)}".encode())
            for v in x:
                walk(v)
        elif torch.is_tensor(x):
            t = x.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        else:
            h.update(repr(x).encode())

    walk(payload)
    return h.hexdigest()


def save_checkpoint(path: str, payload: Dict[str, Any]) -> None:
    """Write ``payload`` (plus its ``checksum``) to ``path`` via a temp file, fsync and rename, so a
    crash leaves the last good file."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    payload = {**payload, "checksum": digest(payload)}
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".ckpt-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; the run's other files follow the umask
        os.replace(tmp, path)
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself survives a power cut
        finally:
            os.close(dir_fd)
    except (OSError, RuntimeError) as err:
        # torch.save reports a failed write as RuntimeError("enforce fail ..."), the OSError as its context
        cause = err if isinstance(err, OSError) else err.__context__
        if not isinstance(cause, OSError):
            raise
        if os.path.exists(tmp):
            os.remove(tmp)
        raise OSError(f"could not write checkpoint {path!r}: {cause.strerror or cause} (is the disk full or "
                      f"read-only?); the previous checkpoint, if any, is unchanged") from err
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load_checkpoint(path: str) -> Dict[str, Any]:
    """Read a checkpoint; a corrupt, truncated or foreign file is a one-line ``ValueError``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint at {path!r}")
    try:
        # weights_only: never unpickle arbitrary objects from a file someone handed us
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch's own message may advise weights_only=False: never do that here
        raise ValueError(f"{path!r} is not a readable mappo checkpoint: it is corrupt, truncated or another "
                         f"program's file ({type(err).__name__})") from None
    if not isinstance(payload, dict) or "config" not in payload or "format" not in payload:
        raise ValueError(f"{path!r} is not a mappo checkpoint (no config/format inside)")
    if "checksum" in payload and payload["checksum"] != digest(payload):
        raise ValueError(f"{path!r} fails its checksum: the file was changed or damaged after it was written")
    # config fields added after a checkpoint was written: the value that gives the networks it holds
    for name, value in FIELDS_BEFORE_THEY_EXISTED.items():
        payload["config"].setdefault(name, value)
    return payload


# critic_pass: older critics ran one row per agent
FIELDS_BEFORE_THEY_EXISTED = {"critic_pass": "agent"}


def rng_state(device: Optional[torch.device] = None) -> Dict[str, Any]:
    """The global RNG states a run draws from (Python, numpy, torch's CPU generator, and the CUDA
    generator of ``device`` when it is a GPU) as tensors and plain containers, so it loads with
    ``weights_only=True``.  Only the run's own GPU: a checkpoint then resumes on a machine with
    fewer GPUs, and a CPU run never starts CUDA to save it."""
    import random

    import numpy as np

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype("int64")), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
        "cuda": [torch.cuda.get_rng_state(device)] if device is not None and device.type == "cuda" else [],
    }


def set_rng_state(state: Dict[str, Any], device: Optional[torch.device] = None) -> None:
    """Restore what :func:`rng_state` captured, the CUDA state onto ``device`` when it is a GPU
    (from files that hold every GPU's state, the one of ``device``'s index)."""
    import random

    import numpy as np

    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss_next"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype("uint32"), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    cuda = state["cuda"]
    if cuda and device is not None and device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        torch.cuda.set_rng_state(cuda[index] if len(cuda) > 1 and index < len(cuda) else cuda[0], device)
