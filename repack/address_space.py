"""Worker threads under an address-space limit (``ulimit -v``).

Python turns a thread that cannot start into an exception we report as out of memory. But when
a thread does start and then cannot have its thread-local data, glibc ends the whole process
("cannot allocate memory for thread-local data", exit 127), which no handler can turn into our
one line. So before a pool of threads starts, the address space it will take is reserved once and
given back (nothing touched), and the pool is made smaller until it fits; one thread means the
work runs in the calling thread, which needs nothing more. Without such a limit (the usual case,
cgroups included: they count memory used, not reserved) nothing is probed.
"""

from __future__ import annotations

import mmap
import resource
import threading

# glibc gives a new thread a stack of RLIMIT_STACK's soft limit (this when it is unlimited)
DEFAULT_THREAD_STACK = 8 << 20
# per thread beyond its stack: its thread-local data and the malloc arena it may get
PER_THREAD_MARGIN = 8 << 20
# left for the calling thread's own work after the pool's share
CALLER_MARGIN = 32 << 20


def _thread_bytes() -> int:
    stack = threading.stack_size()
    if not stack:
        soft, _ = resource.getrlimit(resource.RLIMIT_STACK)
        stack = DEFAULT_THREAD_STACK if soft == resource.RLIM_INFINITY else soft
    return stack + PER_THREAD_MARGIN


def can_reserve(n: int) -> bool:
    """Whether ``n`` bytes of address space can be had now (reserved and given back, untouched)."""
    try:
        probe = mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
                          | getattr(mmap, "MAP_NORESERVE", 0), prot=0)   # PROT_NONE
    except (OSError, MemoryError, OverflowError):
        return False
    probe.close()
    return True


def threads_that_fit(threads: int) -> int:
    """``threads``, or fewer (down to 1: no extra thread) where an address-space limit leaves no
    room for that many."""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if threads <= 1 or soft == resource.RLIM_INFINITY:
        return threads
    per_thread = _thread_bytes()
    while threads > 1 and not can_reserve(threads * per_thread + CALLER_MARGIN):
        threads //= 2
    return max(threads, 1)
