"""train.py end to end on tiny procedural data: learning, resuming, torchrun, and the failure paths."""
import copy
import errno
import json
import math
import os
import pathlib
import re
import signal
import subprocess
import sys
import time
from unittest import mock

import pytest
import torch
from conftest import load_script

import train
from texture.data import procedural
from texture.networks import checkpoints as C
from texture.networks import evaluation, training

T = load_script("test")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def flags(data, out, *extra):
    return ["--data-dir", data, "--image-size", "32", "--batch-size", "4", "--ckpt-dir", str(out / "ckpt"),
            "--log-dir", str(out / "log"), *map(str, extra)]


def run(args, cwd, module="train.py", timeout=300, **popen):
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
    cmd = [os.path.join(os.path.dirname(sys.executable), "torchrun"), *args] if module == "torchrun" else \
        [sys.executable, os.path.join(ROOT, module), *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, **popen)


def weights(path):
    return C.load_checkpoint(path)["model"]


def metrics(out):
    with open(out / "log" / "metrics.jsonl") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def data12(tmp_path_factory):
    """3 classes x 12 patches of 48 px: 27 training and 9 held-out images."""
    out = tmp_path_factory.mktemp("d12") / "demo"
    procedural.make_demo(str(out), classes=3, patches=12, size=48, seed=0)
    return str(out)


def test_training_lowers_loss_and_beats_chance(data12, tmp_path):
    best = train.main(flags(data12, tmp_path, "--epochs", 8, "--log-every", 2))
    rows = metrics(tmp_path)
    losses = [r["loss"] for r in rows if "loss" in r]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    assert best > 1 / 3 + 0.2
    assert os.path.getsize(tmp_path / "log" / "curves.png") > 1000
    assert any(n.startswith("events.out.tfevents") for n in os.listdir(tmp_path / "log"))
    assert all({"loss", "train_acc", "lr", "images_per_s"} <= set(r) for r in rows if "loss" in r)


def test_keep_prunes_old_checkpoints_but_keeps_best(trained_ckpt):
    found = C.checkpoints(trained_ckpt)
    assert [os.path.basename(p) for p in found] == ["ckpt_00000008.pt", "ckpt_00000012.pt"]
    best = C.load_checkpoint(os.path.join(trained_ckpt, "best.pt"))
    accs = [r["test_acc"] for r in metrics(pathlib.Path(trained_ckpt).parent) if "test_acc" in r]
    assert best["metrics"]["test_acc"] == max(accs) and best["step"] == 4 * (accs.index(max(accs)) + 1)
    assert json.load(open(os.path.join(trained_ckpt, "classes.json"))) == best["classes"]
    assert json.load(open(os.path.join(trained_ckpt, "hparams.json")))["keep"] == 2


def test_sigterm_then_resume_equals_uninterrupted_run(demo_data, tmp_path, monkeypatch):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    train.main(flags(demo_data, whole, "--epochs", 3, "--dtype", "fp32"))
    save = training.save

    def save_then_terminate(state, args, best):  # a SIGTERM right after the first epoch's checkpoint
        path = save(state, args, best)
        os.kill(os.getpid(), signal.SIGTERM)
        return path

    monkeypatch.setattr(training, "save", save_then_terminate)
    with pytest.raises(SystemExit, match="stopped at epoch 2 step 5: saved .*ckpt_00000005.pt; continue with"):
        train.main(flags(demo_data, parts, "--epochs", 3, "--dtype", "fp32"))
    monkeypatch.setattr(training, "save", save)
    kept = {p.name: p.read_bytes() for p in (parts / "ckpt").iterdir()}
    with pytest.raises(SystemExit, match=r"already holds checkpoints of a run with other settings "
                                         r"\(--dtype fp32 there\): continue it with --resume, or pick another --ckpt-dir"):
        train.main(flags(demo_data, parts))
    assert {p.name: p.read_bytes() for p in (parts / "ckpt").iterdir()} == kept
    # The same command again continues the run, in the middle of epoch 2, as --resume would.
    train.main(flags(demo_data, parts, "--epochs", 3, "--dtype", "fp32"))
    a, b = weights(C.latest_checkpoint(whole / "ckpt")), weights(C.latest_checkpoint(parts / "ckpt"))
    assert C.latest_checkpoint(parts / "ckpt").endswith("ckpt_00000012.pt")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)
    assert [r["epoch"] for r in metrics(parts) if "epoch" in r] == [1, 2, 3]


def test_resume_with_more_epochs_continues_the_count(trained_ckpt, demo_data, tmp_path):
    linked_run(trained_ckpt, tmp_path)
    train.main(["--resume", "--epochs", "4", "--ckpt-dir", str(tmp_path / "ckpt"), "--log-dir", str(tmp_path / "log")])
    last = C.load_checkpoint(C.latest_checkpoint(tmp_path / "ckpt"))
    assert (last["epoch"], last["step"], last["hparams"]["epochs"], last["hparams"]["image_size"]) == (4, 16, 4, 32)


def linked_run(trained_ckpt, tmp_path):
    """The trained fixture's checkpoints as hard links in tmp_path/ckpt: the shared files stay untouched."""
    (tmp_path / "ckpt").mkdir()
    for name in os.listdir(trained_ckpt):
        os.link(os.path.join(trained_ckpt, name), tmp_path / "ckpt" / name)
    return tmp_path / "ckpt"


def test_a_finished_run_run_again_reports_its_result_and_writes_nothing(trained_ckpt, demo_data, tmp_path, capsys):
    folder = linked_run(trained_ckpt, tmp_path)
    kept = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.iterdir()}
    same = C.load_checkpoint(C.latest_checkpoint(folder))["hparams"]
    argv = ["--data-dir", demo_data, "--image-size", "32", "--epochs", "3", "--batch-size", "4", "--keep", "2",
            "--ckpt-dir", str(folder), "--log-dir", same["log_dir"]]
    best = train.main(argv)
    metrics = C.load_checkpoint(C.latest_checkpoint(folder))["metrics"]
    held_out = f"{metrics['hits']}/{metrics['n']} = {metrics['test_acc']:.4f}"
    assert capsys.readouterr().out.strip() == (
        f"{folder}: the run is done, 3/3 epochs (held-out {held_out}, best {best:.4f}); nothing written. "
        "--resume --epochs N trains it further, another --ckpt-dir starts a new run")
    assert best == metrics["best_acc"]
    train.main(["--resume", "--ckpt-dir", str(folder)])  # --resume on a finished run: the same
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.iterdir()} == kept


@pytest.mark.parametrize("flag, value", [("--arch", "vgg19"), ("--split", "source"), ("--seed", "1"),
                                         ("--batch-size", "8"), ("--test-fraction", "0.5")])
def test_resume_refuses_another_network_split_or_batch_size(flag, value, trained_ckpt, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["train.py"])  # argparse names the program after it, as `python train.py` does
    folder = linked_run(trained_ckpt, tmp_path)
    was = C.load_checkpoint(C.latest_checkpoint(folder))["hparams"][flag[2:].replace("-", "_")]
    with pytest.raises(SystemExit) as e:
        train.main(["--resume", "--ckpt-dir", str(folder), flag, value])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and err[-1] == (f"train.py: error: {flag} {value}: the run in {folder} was trained with "
                                             f"{flag} {was}, and --resume continues it as it was; pick another "
                                             "--ckpt-dir for a new run")
    train.main(["--resume", "--ckpt-dir", str(folder), flag, str(was)])  # its own value: nothing to refuse


def test_nan_loss_stops_and_keeps_last_good_checkpoint(demo_data, tmp_path):
    r = run(flags(demo_data, tmp_path, "--epochs", 1), tmp_path)
    assert r.returncode == 0, r.stderr
    r = run(["--resume", "--epochs", "2", "--lr", "1e30", "--ckpt-dir", str(tmp_path / "ckpt")], tmp_path)
    assert r.returncode != 0
    assert re.match(r"loss is (nan|inf) at epoch 2 step \d+: training diverged", r.stderr.strip().splitlines()[-1])
    assert "Traceback" not in r.stderr
    assert [os.path.basename(p) for p in C.checkpoints(tmp_path / "ckpt")] == ["ckpt_00000004.pt"]


def test_torchrun_two_processes_share_data_and_write_once(data12, tmp_path, capsys):
    r = run(["--standalone", "--nproc-per-node", "2", os.path.join(ROOT, "train.py"),
             *flags(data12, tmp_path, "--epochs", 2, "--dtype", "fp32")], tmp_path, module="torchrun")
    assert r.returncode == 0, r.stderr[-2000:]
    # 27 images over 2 processes of batch 4: 3 steps per epoch, each checkpoint written once by rank 0
    assert [os.path.basename(p) for p in C.checkpoints(tmp_path / "ckpt")] == ["ckpt_00000003.pt", "ckpt_00000006.pt"]
    assert len(re.findall(r"epoch \d/2: held-out", r.stdout)) == 2 and "2 process(es)" in r.stdout
    assert [m["epoch"] for m in metrics(tmp_path) if "epoch" in m] == [1, 2]
    assert all(m["n"] == 9 for m in [C.load_checkpoint(p)["metrics"] for p in C.checkpoints(tmp_path / "ckpt")])
    # Both processes evaluated with the batch-norm statistics saved (rank 0's), so test.py, with the
    # run's own settings, finds the same images right and the same mean loss.
    logged = C.load_checkpoint(C.latest_checkpoint(tmp_path / "ckpt"))["metrics"]
    T.main(["--ckpt", str(tmp_path / "ckpt"), "--dtype", "fp32", "--test-dir", str(tmp_path / "test")])
    report = json.load(open(tmp_path / "test" / "report.json"))
    assert (report["hits"], report["n"], report["held_out"]) == (logged["hits"], 9, True)
    assert report["loss"] == pytest.approx(logged["test_loss"], rel=1e-4)


def test_batch_norm_statistics_averaged_over_processes_equal_one_process_over_all_batches():
    """average_batch_norm's arithmetic, with all_reduce played by a sum over two simulated processes."""
    torch.manual_seed(0)
    batches = [torch.randn(4, 1, 8, 8) * 3 + 1 for _ in range(5)]
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.BatchNorm2d(3))
    torch.optim.swa_utils.update_bn(batches, net)
    whole = {k: v.clone() for k, v in net[1].state_dict().items()}
    parts = []
    for share in (batches[:2], batches[2:]):  # unequal shares: the batch counts weigh them
        torch.optim.swa_utils.update_bn(share, net)
        parts.append(copy.deepcopy(net))

    reduced = sum(torch.cat([m.running_mean * m.num_batches_tracked, m.running_var * m.num_batches_tracked,
                             m.num_batches_tracked.float().view(1)]) for m in (p[1] for p in parts))
    all_reduce = lambda t: t.copy_(reduced)
    for p in parts:
        with mock.patch.object(evaluation.dist, "all_reduce", all_reduce):
            evaluation.average_batch_norm(p)
        for k, v in p[1].state_dict().items():
            torch.testing.assert_close(v, whole[k], rtol=1e-5, atol=1e-6)


def test_non_finite_gradients_with_a_finite_loss_leave_the_weights_alone():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    opt = torch.optim.AdamW(net.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    batch = (torch.rand(2, 1, 8, 8), torch.tensor([0, 2]))
    cpu = torch.device("cpu")
    before = copy.deepcopy(net.state_dict())
    hook = net[0].weight.register_hook(lambda g: g * math.nan)
    loss, _, _, finite = training.step_once(net, opt, sched, scaler, batch, cpu, torch.float32, False)
    assert math.isfinite(loss) and not finite and sched.last_epoch == 0
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    hook.remove()
    assert training.step_once(net, opt, sched, scaler, batch, cpu, torch.float32, False)[3]
    assert not torch.equal(before["0.weight"], net[0].weight) and sched.last_epoch == 1


def test_non_finite_gradients_stop_training_with_one_line(demo_data, tmp_path, monkeypatch):
    step = training.step_once

    def nan_gradients_at_step_6(model, *args):
        if train_run[0].step == 5:
            hook = model.features[0].weight.register_hook(lambda g: g * math.nan)
            try:
                return step(model, *args)
            finally:
                hook.remove()
        return step(model, *args)
    train_run, init = [], training.Run.__init__
    monkeypatch.setattr(training.Run, "__init__", lambda self, *a: (train_run.append(self), init(self, *a))[1])
    monkeypatch.setattr(training, "step_once", nan_gradients_at_step_6)
    with pytest.raises(SystemExit, match=r"^gradients are not finite at epoch 2 step 6: training diverged, "
                                         r"nothing saved \(last good checkpoint: .*ckpt_00000004.pt\)"):
        train.main(flags(demo_data, tmp_path, "--epochs", 2, "--dtype", "fp32"))


def test_resume_with_nothing_to_resume_starts_fresh_with_a_note(tmp_path, capsys):
    args, resume = train.settings(["--resume", "--ckpt-dir", str(tmp_path / "ckpt"), "--log-dir", str(tmp_path / "l")])
    assert resume is None and not args.resume
    assert capsys.readouterr().out.strip() == f"--resume: no checkpoint in {tmp_path / 'ckpt'} yet, starting a fresh run"


def test_a_fresh_run_refuses_a_log_dir_holding_another_runs_logs(tmp_path):
    log = tmp_path / "log"
    log.mkdir()
    (log / "metrics.jsonl").write_text('{"step": 4, "loss": 1.0}\n')
    (log / "events.out.tfevents.1.host").write_bytes(b"events")
    kept = {p.name: p.read_bytes() for p in log.iterdir()}
    with pytest.raises(SystemExit, match=f"^--log-dir {log} already holds the logs of another run"):
        train.settings(["--ckpt-dir", str(tmp_path / "new-ckpt"), "--log-dir", str(log)])
    assert {p.name: p.read_bytes() for p in log.iterdir()} == kept
    (log / "metrics.jsonl").unlink()
    with pytest.raises(SystemExit, match="already holds the logs"):  # events alone are logs too
        train.settings(["--ckpt-dir", str(tmp_path / "new-ckpt"), "--log-dir", str(log)])


def wait_for_checkpoint(directory, proc, timeout=120):
    end = time.time() + timeout
    while not C.checkpoints(directory):
        assert proc.poll() is None and time.time() < end, "no checkpoint appeared"
        time.sleep(0.1)


def test_sigkill_mid_epoch_then_resume_loses_at_most_one_epoch(demo_data, tmp_path):
    env = {**os.environ, "PYTHONPATH": ROOT}
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), *flags(demo_data, tmp_path, "--epochs", 2)],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_checkpoint(tmp_path / "ckpt", proc)
    proc.kill()
    proc.wait()
    for path in C.checkpoints(tmp_path / "ckpt"):
        C.load_checkpoint(path)  # every numbered file is complete; temporaries never match the pattern
    r = run(["--resume", "--ckpt-dir", str(tmp_path / "ckpt")], tmp_path)
    assert r.returncode == 0, r.stderr
    resumed = int(r.stdout.split("resuming at step ")[1].split()[0])
    assert resumed >= 4 and resumed % 4 == 0
    assert [m["epoch"] for m in metrics(tmp_path) if "epoch" in m] == [1, 2]
    assert C.latest_checkpoint(tmp_path / "ckpt").endswith("ckpt_00000008.pt")


def children(pid):
    out = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == pid and "train.py" in \
                        open(f"/proc/{entry}/cmdline").read():
                    out.append(int(entry))
        except (OSError, ValueError, IndexError):
            pass
    return out


def test_torchrun_restarts_a_killed_worker_which_resumes(demo_data, tmp_path):
    env = {**os.environ, "PYTHONPATH": ROOT}
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    with open(tmp_path / "out.txt", "w") as out:
        proc = subprocess.Popen([torchrun, "--standalone", "--nproc-per-node", "1", "--max-restarts=1",
                                 os.path.join(ROOT, "train.py"), *flags(demo_data, tmp_path, "--epochs", 2)],
                                cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
        wait_for_checkpoint(tmp_path / "ckpt", proc)
        workers = children(proc.pid)
        assert len(workers) == 1
        os.kill(workers[0], signal.SIGKILL)
        proc.wait(timeout=300)
    out = (tmp_path / "out.txt").read_text()
    assert proc.returncode == 0, out[-2000:]
    assert "resuming at step" in out
    assert C.latest_checkpoint(tmp_path / "ckpt").endswith("ckpt_00000008.pt")


def test_disk_full_while_saving_keeps_the_previous_checkpoint(demo_data, tmp_path, monkeypatch):
    calls, save = [], torch.save

    def half_then_enospc(obj, f, *a, **k):
        calls.append(f)
        if len(calls) < 2:
            return save(obj, f, *a, **k)
        with open(f, "wb") as out:
            out.write(b"\x00" * 100)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", half_then_enospc)
    with pytest.raises(SystemExit, match=r"ckpt_00000008.pt: cannot save checkpoint \(No space left on device\)"):
        train.main(flags(demo_data, tmp_path, "--epochs", 3))
    monkeypatch.setattr(torch, "save", save)
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["best.pt", "ckpt_00000004.pt", "classes.json", "hparams.json"]
    assert C.load_checkpoint(tmp_path / "ckpt" / "ckpt_00000004.pt")["step"] == 4


@pytest.mark.parametrize("case", ["missing data", "empty data", "unwritable ckpt dir", "bad flag", "corrupt resume"])
def test_bad_input_is_a_one_line_error(case, demo_data, tmp_path):
    args = flags(demo_data, tmp_path, "--epochs", 1)
    expect = {"missing data": "nowhere: data folder not found", "empty data": "empty: no images",
              "unwritable ckpt dir": "cannot write there", "bad flag": "--lr: must be > 0",
              "corrupt resume": "unreadable checkpoint, truncated or corrupt"}[case]
    if case == "missing data":
        args[1] = "nowhere"
    elif case == "empty data":
        (tmp_path / "empty").mkdir()
        args[1] = str(tmp_path / "empty")
    elif case == "unwritable ckpt dir":
        (tmp_path / "file").write_text("")
        args[7] = str(tmp_path / "file" / "ckpt")
    elif case == "bad flag":
        args += ["--lr", "-1"]
    else:
        (tmp_path / "ckpt").mkdir()
        (tmp_path / "ckpt" / "ckpt_00000004.pt").write_bytes(b"PK\x03\x04 not a whole file")
        args += ["--resume"]
    r = run(args, tmp_path)
    assert r.returncode != 0
    assert expect in r.stderr.strip().splitlines()[-1], r.stderr
    assert "Traceback" not in r.stderr
