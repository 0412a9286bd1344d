"""The parts of a synthesis run and where each runs, as texture.synthesis.optimize runs them: the
refinement's and the polish's options, which sizes of an output made coarse to fine are refined, and
how many iterations a run makes in all (gen.py's progress bar, its memory check).
"""
import dataclasses

from texture.synthesis.levels import level_steps


def refined_at_full_size(options):
    """Whether the refinement runs at the output's full size after all else: always in one level; an output
    made coarse to fine gets it at its levels instead (optimize.coarse_to_fine) unless options.refine_coarse."""
    return options.refine_steps > 0 and (options.levels == 1 or options.refine_coarse)


def fine_refinement(options):
    """Whether the output is made coarse to fine and its finer levels are refined too (optimize.coarse_to_fine)."""
    return options.levels > 1 and options.refine_steps > 0 and options.fine_refine_steps > 0 and \
        not options.refine_coarse


def refines_full_size(options):
    """Whether the correspondence term runs on the output's full size, at some point (batch.too_large's
    memory.synthesis)."""
    return refined_at_full_size(options) or fine_refinement(options)


def fine_level(options, steps):
    """The options of a finer level of coarse to fine: `steps` Gram + spectrum iterations, then
    fine_refine_steps of the refinement and fine_polish_steps of polish when fine_refinement."""
    refined = fine_refinement(options)
    return dataclasses.replace(options, levels=1, short_from=0, steps=steps,
                               refine_steps=options.fine_refine_steps if refined else 0,
                               polish_steps=options.fine_polish_steps if refined else 0)


def planned_steps(options):
    """The iterations optimize.synthesize runs with these options (levels decided, as optimize.resolve
    gives them) when no image stops early: the loops' own arithmetic, for a progress bar's length."""
    o = options
    if refined_at_full_size(o):  # refine: the rest, then the refinement and its polish
        return planned_steps(dataclasses.replace(o, refine_steps=0)) + o.refine_steps + o.polish_steps
    if o.levels > 1:  # coarse_to_fine: the coarser levels, then this one
        return planned_steps(dataclasses.replace(o, levels=o.levels - 1)) + \
            planned_steps(fine_level(o, level_steps(o.steps, o.levels)[-1]))
    return o.steps


def refinement(options):
    """The options of the refinement that follows options.steps: the correspondence term (on
    refine_layers, with refine_channels) added to the loss, Adam at refine_lr, refine_steps iterations at
    the output's size."""
    o = options
    loss = o.loss if "gcd" in o.loss.split("+") else o.loss + "+gcd"
    return dataclasses.replace(o, loss=loss, gcd_layers=o.refine_layers, gcd_channels=o.refine_channels,
                               optimizer="adam", lr=o.refine_lr, steps=o.refine_steps, refine_steps=0, levels=1,
                               short_from=0)


def polish(options):
    """The options of the iterations after the refinement: the first part's loss and optimiser again,
    polish_steps of them at the output's size."""
    return dataclasses.replace(options, steps=options.polish_steps, refine_steps=0, levels=1, short_from=0)
