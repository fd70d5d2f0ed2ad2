"""What glibc's malloc does with one large block: the check behind model.memory's tests."""
import ctypes

LARGE_BLOCK = 16 << 20   # bytes: TensorFlow's step tensors are 1-5 MB, a clean chunk's numba arrays tens of MB


class Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def has_mallinfo2() -> bool:
    """Whether this C library is glibc >= 2.33, which the check needs."""
    return hasattr(ctypes.CDLL(None), "mallinfo2")


def large_block_fate(size: int = LARGE_BLOCK) -> tuple[bool, bool]:
    """``(mapped, kept)`` for one ``malloc(size)`` in this process: whether glibc mapped the block
    on its own (rather than carving it from a heap), and whether its bytes are still held, free,
    on a heap after ``free()`` (rather than handed back to the kernel)."""
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.free.argtypes, libc.mallinfo2.restype = ctypes.c_void_p, [ctypes.c_void_p], Mallinfo2
    block = libc.malloc(size)
    mapped = libc.mallinfo2().hblkhd >= size
    libc.free(block)
    return mapped, libc.mallinfo2().fordblks >= size
