"""numba compilation with an on-disk cache that never stops the metric from working.

`njit(cache=True)` stores compiled kernels beside the source (or in numba's
user-wide cache, or in $NUMBA_CACHE_DIR) so later processes skip the ~1 s
compile. When no cache location is writable (a read-only install with no
usable home directory), numba refuses the decorator with RuntimeError; then we
compile in memory only, which costs the compile once per process but gives the
same results.
"""

from __future__ import annotations

import warnings
from typing import Callable

import numba

# Set when at least one kernel had to be compiled without an on-disk cache.
CACHE_DISABLED_FOR: list[str] = []


def jit(func: Callable) -> Callable:
    """`numba.njit(cache=True)`, falling back to an uncached njit if no cache dir is usable."""
    try:
        return numba.njit(cache=True)(func)
    except (RuntimeError, OSError) as error:
        CACHE_DISABLED_FOR.append(func.__qualname__)
        warnings.warn(
            f"numba cannot cache {func.__qualname__} ({error}); compiling in memory "
            "each process. Set NUMBA_CACHE_DIR to a writable folder to keep compiled kernels.",
            RuntimeWarning,
            stacklevel=2,
        )
        return numba.njit(cache=False)(func)
