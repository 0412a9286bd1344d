"""Memory a run is about to take, estimated from the sizes it was asked for before anything large is
allocated, against what the device has free: a size that cannot fit is refused in one line with both
figures, instead of the machine swapping for hours or the process being killed half-way. And how
the CPU's freed memory is handled (keep_freed).

The estimates are the rise of the peak resident memory (VmHWM) of a process already set up, measured
on the CPU at two sizes each and rounded up (docs/troubleshooting.md, out of memory):
    synthesis (gen.py)   about 3 KB per output pixel and image of the batch, bf16 and fp32 alike (the
                         network's activations kept for the backward pass, L-BFGS's history, the
                         quality measures), 4 KB with the refinement at full size (its chunks of
                         the correspondence term); plus 0.4 GB; a colour output 3.5 KB more
                         per pixel (its colouring and RGB patch measures: peak 3.56 GB against
                         grey's 2.72 GB at 512 px, docs/colour.md)
    texnet.py sample     about 48 B per pixel of the sample (its noise, the image, its PNG and the
                         collection; 12 B more with --sample-fill), plus 1.2 KB per pixel of one
                         tile of at most --sample-tile px a side with its halo, and of the quality
                         measures' crop of that size
    prepro.py --demo     one patch being drawn (float64 planes) and the whole set decoded at once

    python -c "import torch; from texture.run import memory; print(memory.available(torch.device('cpu')) / 2**30)"
"""
import ctypes
import os

import torch

GB = 2 ** 30
SYNTHESIS_PIXEL = 3072  # bytes per output pixel and image of the batch
SYNTHESIS_REFINED_PIXEL = 4096  # the same when the refinement runs at full size
SYNTHESIS_FIXED = 0.4 * GB
SYNTHESIS_COLOUR_PIXEL = 3584  # bytes a colour output takes beyond a grey one, per pixel
SAMPLE_PIXEL = 56  # bytes per pixel of a texnet.py sample (about 5 of them for tempering its spectrum, spectrum.temper)
FILL_PIXEL = 12  # bytes per pixel that --sample-fill adds (its noise and that noise's transform: 2.28 GB against 2.08 GB at 4096 px)
TILE_PIXEL = 1200  # bytes per pixel of one tile (with its halo) and of the quality measures' crop
DEMO_PATCH_PIXEL = 80  # bytes per pixel of the patch being drawn
DEMO_SET_PIXEL = 3  # bytes per pixel of every patch, decoded and stacked into the cache
KEEP_FACTOR = 1.6  # peak memory with keep_freed against without: 1.54 measured on a 1024 px output
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h) and their defaults
DEFAULT_TRIM_THRESHOLD, DEFAULT_MMAP_MAX = 128 * 1024, 65536


def available(device):
    """Bytes free for this process on `device`: CUDA's free memory; on the CPU MemAvailable of
    /proc/meminfo, else psutil's figure where psutil is installed; None when nothing tells."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil
    except ImportError:
        return None
    return psutil.virtual_memory().available


def shortfall(need, device):
    """'about X GB needed, Y GB available' when `need` bytes do not fit in what `device` has free;
    None when they do, or when nothing tells what is free."""
    have = available(device)
    if have is None or need <= have:
        return None
    return f"about {need / GB:.1f} GB needed, {have / GB:.1f} GB available"


def synthesis(batch, size, refined, colour=False):
    """Bytes a batch of `batch` outputs of `size` (H, W) takes at its full-size level (`refined`: with
    the refinement there; `colour`: colour outputs)."""
    pixel = (SYNTHESIS_REFINED_PIXEL if refined else SYNTHESIS_PIXEL) + (SYNTHESIS_COLOUR_PIXEL if colour else 0)
    return SYNTHESIS_FIXED + batch * size[0] * size[1] * pixel


def sample(size, tile, halo, fill=False):
    """Bytes of one texnet.py sample of `size` (H, W) made in tiles of `tile` px with `halo` px around
    (`fill`: with --sample-fill)."""
    halo = halo if max(size) > tile else 0  # one pass over a sample no larger than a tile
    side = [min(s, tile) + 2 * halo for s in size]
    return size[0] * size[1] * (SAMPLE_PIXEL + (FILL_PIXEL if fill else 0)) + side[0] * side[1] * TILE_PIXEL


def demo(images, size):
    """Bytes of writing and caching a demo set of `images` patches of `size` px."""
    return size * size * (DEMO_PATCH_PIXEL + images * DEMO_SET_PIXEL)


def resident():
    """Bytes of this process now resident in memory (Linux's /proc/self/statm; None elsewhere)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def glibc():
    """The C library when it is glibc (it has mallopt), else None: macOS's and Windows' allocators are
    left as they are."""
    try:
        lib = ctypes.CDLL(None)
        lib.mallopt
        return lib
    except (AttributeError, OSError, TypeError):
        return None


# resident bytes above which keep_freed's choice is undone (bound_kept; None: not kept), and the resident
# bytes of the process when it was first made, before any synthesis: what it holds beyond is the run's
_kept = {"cap": None, "base": None}


def keep_freed(need, device):
    """Keep the memory this process frees for its own reuse, when `device` is the CPU, the C library is
    glibc, Linux tells the resident memory and `need` * KEEP_FACTOR bytes fit in what is free; returns
    whether it now does. bound_kept undoes it once the process holds that much more than it did when
    this was first called, or half of what was free then if that is more (the estimates fall short of
    some batches: a 28-target batch at 160 px peaked at 6.6 GB, its estimate 3.3 GB).

    glibc serves each block above 32 MB (a large output's activations) with a fresh mapping and unmaps
    it when freed, so every pass faults in and zeroes every page again: a third of a 1024 px run's time
    in the kernel. Here every block comes from the heap, which is never trimmed: the pages stay mapped
    and are reused, at the price of fragmentation (the peak 1.4 to 1.5 times higher on a 1024 px output)."""
    lib, now = glibc(), resident()
    if device.type != "cpu" or lib is None or now is None or shortfall(need * KEEP_FACTOR, device):
        return False
    if not (lib.mallopt(M_MMAP_MAX, 0) and lib.mallopt(M_TRIM_THRESHOLD, 2 ** 31 - 1)):
        return False
    _kept["base"] = _kept["base"] or now
    _kept["cap"] = _kept["base"] + max(need * KEEP_FACTOR, (available(device) or 0) / 2)
    return True


def bound_kept():
    """Return to glibc's own handling (large blocks mapped and unmapped, the heap trimmed, and what is
    free now given back) once the process holds more than keep_freed allowed: a program whose small
    allocations land between freed large blocks leaves holes too small for the next large one, and its
    heap would grow without end. Returns whether it did."""
    if _kept["cap"] is None or resident() <= _kept["cap"]:
        return False
    lib = glibc()
    lib.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
    lib.mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD)
    lib.malloc_trim(0)
    _kept["cap"] = None
    return True
