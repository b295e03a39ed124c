"""Following a night's console log while its controller runs (``abflow watch``, ``abflow submit
--wait``): the lines as they are written, until the controller has ended, control characters
shown escaped (abflow.state.text: the log holds what recipes and servers said)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TextIO

from abflow.state.text import inert


def copy_new(path: str, offset: int, out: TextIO) -> int:
    """Write what ``path`` holds from ``offset`` on to ``out`` (whole lines only, shown inert);
    return the offset after them."""
    if not os.path.isfile(path):  # not yet there (or no file: a FIFO would block)
        return offset
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except OSError:
        return offset
    end = data.rfind(b"\n") + 1
    if end:
        out.write(inert(data[:end].decode("utf-8", "replace")))
        out.flush()
    return offset + end


def follow(
    path: str,
    offset: int,
    ended: Callable[[], bool],
    out: TextIO,
    interval: float = 2.0,
) -> int:
    """Write the lines of ``path`` from ``offset`` on to ``out`` as they come, until
    ``ended()`` says the writer has ended (and what it wrote last is out); return the offset
    reached. Ctrl-C stops following (the night goes on)."""
    try:
        while True:
            done = ended()
            offset = copy_new(path, offset, out)
            if done:
                return offset
            time.sleep(interval)
    except KeyboardInterrupt:
        return offset
