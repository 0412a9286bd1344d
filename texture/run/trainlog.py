"""What train.py logs: TensorBoard events, metrics.jsonl and a console line per log interval on
process 0, and curves.png from metrics.jsonl at the end. Example:

    python -c "from texture.run import trainlog; trainlog.plot_curves('asset/train/log/metrics.jsonl', 'curves.png')"
"""
import json
import os

from tqdm import tqdm

from texture.run.outputs import write_atomic


class Log:
    """TensorBoard events, metrics.jsonl and console lines (process 0 only); curves.png at the end."""

    def __init__(self, log_dir, step, enabled):
        self.dir, self.enabled = log_dir, enabled
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter
        try:
            os.makedirs(log_dir, exist_ok=True)
        except OSError as e:
            raise SystemExit(f"--log-dir {log_dir}: cannot write there ({e.strerror or e})")
        self.path = os.path.join(log_dir, "metrics.jsonl")
        # Drop what this run logged after its last checkpoint (a killed or restarted worker): the
        # resumed run logs it again. Another run's logs never get here (settings() refuses them).
        kept = []
        if os.path.exists(self.path):
            with open(self.path, encoding="utf-8") as f:
                kept = [line for line in f if json.loads(line)["step"] <= step]
        with open(self.path, "w", encoding="utf-8") as f:
            f.writelines(kept)
        self.tb = SummaryWriter(log_dir, purge_step=step)

    def __call__(self, step, **metrics):
        if not self.enabled:
            return
        for key, value in metrics.items():
            self.tb.add_scalar(key, value, step)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
        tqdm.write(f"step {step:6d}  " + "  ".join(f"{k} {v:.4g}" for k, v in metrics.items()))

    def close(self):
        if self.enabled:
            self.tb.close()
            plot_curves(self.path, os.path.join(self.dir, "curves.png"))


def plot_curves(metrics_path, png):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    with open(metrics_path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, keys in zip(axes, [["loss", "test_loss"], ["train_acc", "test_acc"], ["lr"]]):
        for key in keys:
            pts = [(r["step"], r[key]) for r in rows if key in r]
            if pts:
                ax.plot(*zip(*pts), marker="o" if key.startswith("test") else None, label=key)
        ax.set_xlabel("step")
        ax.legend()
    fig.tight_layout()
    write_atomic(png, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
