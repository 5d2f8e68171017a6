"""Process-wide thread settings, changed for a block of code and then restored.

numpy's OpenBLAS and torch each keep one thread count for the whole process. Setting one for good
(as ``annotate`` once did) changes every later computation of the process: OpenBLAS's float32 GEMM
gives results that differ in the last bits with the number of threads, so after an annotate run a
simulation in the same process no longer matched the same simulation in a fresh one.

:class:`ScopedSetting` changes such a setting while at least one block holds it and restores the
original when the last one leaves. Blocks may overlap in several threads (the ``threads``
scheduler runs partitions side by side): the count is reference-counted, not nested per thread.
:func:`single_thread_blas` is the one the package uses; torch's lives with torch, in
:func:`catalog_tool.models.threads.torch_threads`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

__all__ = ["ScopedSetting", "single_thread_blas"]


class ScopedSetting:
    """A process-wide value set while any block holds it, restored when the last block exits.

    Parameters
    ----------
    apply : callable(value) -> callable()
        Sets the value and returns a function that restores what was there before.
    """

    def __init__(self, apply: Callable[[object], Callable[[], None]]):
        self._apply = apply
        self._lock = threading.Lock()
        self._holders = 0
        self._restore: Callable[[], None] | None = None
        self._value = None

    @contextlib.contextmanager
    def __call__(self, value) -> Iterator[None]:
        with self._lock:
            if self._holders == 0:
                self._restore = self._apply(value)
                self._value = value
            elif value != self._value:
                # overlapping blocks asking for different values: the last one asked wins until
                # every block is done (the original is still what gets restored)
                self._apply(value)
                self._value = value
            self._holders += 1
        try:
            yield
        finally:
            with self._lock:
                self._holders -= 1
                if self._holders == 0:
                    restore, self._restore, self._value = self._restore, None, None
                    restore()

    @property
    def held(self) -> bool:
        """True while some block holds the setting."""
        return self._holders > 0


def _limit_openblas(n) -> Callable[[], None]:
    # scipy carries its own OpenBLAS: load it first so that it is limited too
    import scipy.linalg  # noqa: F401
    from threadpoolctl import ThreadpoolController

    # OpenBLAS only (numpy's and scipy's copies): torch's own thread pools are torch_threads' business
    limiter = ThreadpoolController().select(internal_api="openblas").limit(limits=int(n))
    return limiter.restore_original_limits


_openblas = ScopedSetting(_limit_openblas)


def single_thread_blas() -> contextlib.AbstractContextManager:
    """Run numpy's (and scipy's) OpenBLAS on one thread inside a ``with`` block.

    Preprocessing and the simulators call BLAS on small matrices (a few thousand pixels by a few
    dozen terms). A multi-threaded OpenBLAS gains nothing on such sizes and its threads wait for
    each other: on a busy machine, or beside torch, that made every continuum fit 50 to 200 times
    slower. One thread also makes the results independent of the machine's core count (OpenBLAS's
    float32 GEMM rounds differently with the number of threads), so a simulation is a function of
    its seed and a preprocessed spectrum of its input only.
    """
    return _openblas(1)
