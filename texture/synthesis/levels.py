"""The levels of coarse to fine synthesis (synthesis.coarse_to_fine): how many a large output gets, why
a number cannot work for a size, the iterations per level and the upsampling between levels.
"""
import torch


def auto_levels(size, target_side, factor, tile):
    """1 unless the output is at least twice the target's side; then halve both while the target
    stays >= max(2 * factor, 48) px (and, with tile, the output a multiple of factor), at most 4."""
    levels = 1
    if min(size) >= 2 * target_side:
        while (levels < 4 and target_side >> levels >= max(2 * factor, 48)
               and not levels_problem(size, (target_side,), levels + 1, factor, tile, 2 * factor)):
            levels += 1
    return levels


def levels_problem(size, target_shape, levels, factor, tile, least):
    """Why `levels` cannot work for this output size and target (None if it can): the coarsest level
    must be at least `least` px (synthesis.smallest_side), and with tile a multiple of `factor`."""
    k = 2 ** (levels - 1)
    if min(target_shape) // k < least or min(size) // k < least:
        most = (min(*size, *target_shape) // least).bit_length()  # halvings that keep `least` px, plus one
        return (f"the coarsest level would be below {least} px (output {min(size) // k}, target "
                f"{min(target_shape) // k}); at most {most} level{'s' if most > 1 else ''} here")
    if tile and any(s % (factor * k) for s in size):
        return f"--tile needs sides that are multiples of {factor * k} with {levels} levels"
    return None


def level_steps(steps, levels):
    """Iterations per level, coarsest first: each finer level (4x the pixels) gets half as many."""
    return [max(1, steps >> i) for i in range(levels)]


def downsample(img):
    """(H, W) or (C, H, W) -> half the size, each pixel the mean of 2 x 2."""
    x = torch.nn.functional.avg_pool2d(img.float()[None] if img.dim() == 3 else img.float()[None, None], 2)
    return x[0] if img.dim() == 3 else x[0, 0]


def upsample(img, size, tile):
    """(H, W) or (C, H, W) -> size (twice as large) by bilinear interpolation; periodic across the edges
    with tile."""
    x = img.float()[None] if img.dim() == 3 else img.float()[None, None]
    if not tile:
        x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
    else:
        x = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="circular")
        x = torch.nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)[..., 2:-2, 2:-2]
    return x[0] if img.dim() == 3 else x[0, 0]
