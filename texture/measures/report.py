"""The table of quality measures gen.py and texnet.py print after a run, and its JSON twin
(report.json): one row per target, then the means; the colour measures' columns when a target is in
colour.
"""
import math

from texture.run.outputs import save_json

COLUMNS = ["hist_distance", "spectrum_distance", "peak_energy", "hf_excess", "lbp_distance", "patch_nn", "patch_cover",
           "copy_share", "recognised", "seconds"]
COLOUR_COLUMNS = ["colourfulness", "colour_hist_distance", "colour_patch_nn", "colour_patch_cover", "colour_copy_share"]


def columns(records):
    """COLUMNS, with COLOUR_COLUMNS before the last two when any record has colour measures."""
    if not any("colourfulness" in (r.get("quality") or {}) for r in records):
        return COLUMNS
    return COLUMNS[:-2] + COLOUR_COLUMNS + COLUMNS[-2:]


def summarise(records):
    """Mean of each measure over the targets that finished, and the share the classifier recognised."""
    done = [r for r in records if r.get("quality")]
    mean = {}
    for c in columns(records):
        vals = [row(r)[c] for r in done if row(r).get(c) is not None]
        mean[c] = sum(float(v) for v in vals) / len(vals) if vals else None
    return {"targets": len(records), "finished": len(done), "mean": mean}


def row(record):
    q, v = record.get("quality") or {}, record.get("verdict") or {}
    return {**q, "recognised": v.get("recognised"), "seconds": record.get("seconds")}


def table(records, summary):
    """A fixed-width text table: one line per target, then the means."""
    def fmt(v):
        if v is None:
            return "-"
        if isinstance(v, bool):
            return "yes" if v else "no"
        return f"{v:.3f}" if isinstance(v, float) and math.isfinite(v) else str(v)
    cols = columns(records)
    head = ["target"] + cols
    lines = [[r.get("name", r.get("label", "?"))] + [fmt(row(r).get(c)) for c in cols] for r in records]
    lines.append(["mean"] + [fmt(summary["mean"].get(c)) for c in cols])
    widths = [max(len(x[i]) for x in [head] + lines) for i in range(len(head))]
    return "\n".join("  ".join(x[i].ljust(widths[i]) for i in range(len(head))) for x in [head] + lines)


def write_report(records, path):
    """Write {'summary', 'targets'} as JSON (atomically) and return the printable table."""
    summary = summarise(records)
    save_json({"summary": summary, "targets": [{"name": r.get("name"), "label": r.get("label"), **row(r)}
                                               for r in records]}, path)
    return table(records, summary)
