"""torch's CPU thread count for a block of code (see :mod:`catalog_tool.threads`)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

from catalog_tool.errors import ConfigError
from catalog_tool.threads import ScopedSetting

__all__ = ["torch_threads", "follow_torch_threads"]


def _set(n) -> Callable[[], None]:
    before = torch.get_num_threads()
    if n != before:
        torch.set_num_threads(int(n))

    def restore():
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)

    return restore


_torch = ScopedSetting(_set)


def torch_threads(n: int | None) -> contextlib.AbstractContextManager:
    """Run torch on ``n`` CPU threads inside a ``with`` block, then restore the count it had.

    ``None`` leaves torch as it is. Overlapping blocks (partitions side by side on the ``threads``
    scheduler) share one setting: the original count comes back when the last one ends.

    Raises
    ------
    ConfigError
        ``n`` < 1.
    """
    if n is None:
        return contextlib.nullcontext()
    if int(n) < 1:
        raise ConfigError(f"--threads must be >= 1, got {n}")
    return _torch(int(n))


def follow_torch_threads() -> None:
    """Make the calling thread run torch's CPU kernels on torch's current thread count.

    OpenMP keeps the thread count per thread: a thread started after ``torch.set_num_threads(1)``
    still has the machine's core count, so its matrix products ran multi-threaded (slower beside
    other busy threads, measured) and rounded differently from the same products elsewhere. Call
    this first in every thread that runs torch (the pipeline's worker threads do).
    """
    torch.set_num_threads(torch.get_num_threads())
