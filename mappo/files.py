"""Files written whole or not at all: a reader (or the next command) never finds half a file."""
from __future__ import annotations

import contextlib
import os
from typing import Iterator


@contextlib.contextmanager
def written_atomically(path: str) -> Iterator[str]:
    """Yield a temp path beside ``path`` with the same extension (writers such as imageio and
    matplotlib pick the format from it); on success it is renamed to ``path``, on any error removed.

        with written_atomically("runs/x/curves.png") as tmp:
            fig.savefig(tmp)
    """
    folder, name = os.path.split(os.path.abspath(path))
    root, ext = os.path.splitext(name)
    tmp = os.path.join(folder, f".{root}.{os.getpid()}.partial{ext}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
