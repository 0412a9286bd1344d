"""texnet.py's generator checkpoint: written with its normalisation statistics frozen (save), and read
back for --resume only when it trained on the same pixels with the same settings (resume)."""
import torch

from texture.networks import feedforward as G
from texture.networks.checkpoints import CheckpointError, save_checkpoint
from texture.synthesis import sampling

OWN = {"loss": "texnet_loss", "spectrum_weight": "texnet_spectrum_weight"}  # gen.py's flag: texnet.py's own
# a generator resumes only with the settings it trained with (key in its checkpoint: flag), e.g. after a default
# changed; the target it trained on is compared pixel for pixel (same_targets)
AS_TRAINED = {**OWN, "texnet_warmup": "texnet_warmup"}
CROP = ("image_size", "target_side", "full", "colour")  # the settings that make the target from its file (load_target)


def as_stored(target):
    """A target in [0, 1] as the checkpoint keeps it (save) and same_targets compares it: 8-bit."""
    return (target * 255).round().to(torch.uint8).cpu()


def save(g, opt, job, args, step, curve, seconds):
    """Freeze the normalisation statistics (generator.calibrate), then write texnet.pt atomically
    (sampling.load reads it back)."""
    side = args.texnet_calibrate - args.texnet_calibrate % g.factor or g.factor
    G.calibrate(g, G.noise_pyramid(g, side, side, args.seed, device=next(g.parameters()).device))
    state = {"generator": g.config(), "model": g.state_dict(), "optimizer": opt.state_dict(), "step": step,
             "labels": job["labels"], "targets": job["paths"], "curve": curve, "seconds": seconds,
             "target_images": [as_stored(t) for t in job["targets"]],
             "settings": vars(args)}
    save_checkpoint(state, job["ckpt"])


def same_targets(job, ckpt):
    """Refuse to resume on other pixels than the generator trained on: another --image-size, --full,
    --target-side or --colour, or a changed file, would silently train it on another texture."""
    for path, was, t in zip(job["paths"], ckpt["target_images"], job["targets"]):
        now = as_stored(t)
        if torch.equal(was, now):
            continue
        s = ckpt["settings"]
        how = " ".join(f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}")  # --target-side 0, no --full: unsaid
                       for k in CROP if (v := s.get(k)) not in (None, False))
        size, here = ("x".join(map(str, x.shape[-1:-3:-1])) + " in colour" * (x.dim() == 3) for x in (was, now))
        here = f"here {here}" if here != size else "here other pixels of that size (another crop, or the file changed)"
        raise SystemExit(f"{job['ckpt']}: trained on {path} as {size}, {here}: resume with {how}, as it trained")


def resume(job, args, g, opt):
    """Load job's checkpoint into the fresh generator `g` and its optimiser `opt`, built from these
    arguments, after checking it trained on the same targets, architecture and settings; returns
    (step, loss curve, seconds trained)."""
    if not args.resume:
        raise SystemExit(f"{job['ckpt']}: a generator is already there: continue with --resume, "
                         "or pick another --texnet-dir")
    try:
        old, ckpt = sampling.load(job["ckpt"])
    except CheckpointError as e:
        raise SystemExit(str(e))
    if ckpt["labels"] == job["labels"]:  # before the waves and the colour channels, which follow from the target
        same_targets(job, ckpt)

    def but_waves(config):
        return {k: v for k, v in config.items() if k != "waves"}

    if old.waves != g.waves and but_waves(old.config()) == but_waves(g.config()):  # e.g. trained before the default
        raise SystemExit(f"{job['ckpt']}: trained with {old.waves} plane waves, here {g.waves}: resume with "
                         f"--texnet-waves {old.waves}")
    if old.config() != g.config() or ckpt["labels"] != job["labels"]:
        raise SystemExit(f"{job['ckpt']}: trained as {old.config()} on {ckpt['labels']}, not "
                         f"{g.config()} on {job['labels']}")
    for k, flag in AS_TRAINED.items():  # its own loss and learning-rate ramp
        was, now, flag = ckpt["settings"].get(k), getattr(args, k), "--" + flag.replace("_", "-")
        if was is not None and was != now:
            raise SystemExit(f"{job['ckpt']}: trained with {flag} {was}, here {now}: resume with {flag} {was}")
    g.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])  # its learning rate is set at every step (learning_rate)
    return ckpt["step"], list(ckpt.get("curve", [])), float(ckpt.get("seconds", 0.0))
