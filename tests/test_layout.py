"""The repository's layout: the scripts at the root, one library package that never imports them, and
gen.py's output unchanged by the move (a short run compared with one made before it)."""
import ast
import glob
import os

import numpy as np
import torch
from conftest import ROOT
from PIL import Image

import gen

SCRIPTS = {"prepro", "train", "test", "gen", "texnet", "fidelity", "bench"}
ROOT_MODULES = {"hyperparams", "model"}  # the design's shared defaults and network, imported by the library too
GOLDEN = os.path.join(ROOT, "tests", "data", "golden")
# torch, CPU capability and AMX the golden images were made with: oneDNN picks other kernels on a CPU
# without AMX (an AMD EPYC with AVX512 rounded stripes1 differently)
GOLDEN_ARITHMETIC = ("2.14.1+cu130", "AVX512", True)


def imported(path):
    """Top-level module names a Python file imports."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_the_root_holds_what_a_user_runs():
    root = {os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "*.py"))}
    assert root == SCRIPTS | ROOT_MODULES and len(root) <= 10


def test_the_library_never_imports_a_script():
    files = glob.glob(os.path.join(ROOT, "texture", "**", "*.py"), recursive=True)
    assert len(files) > 20
    offending = {os.path.relpath(f, ROOT): imported(f) & SCRIPTS for f in files if imported(f) & SCRIPTS}
    assert not offending
    for name in ROOT_MODULES:  # the two root modules the library uses import no script either
        assert not imported(os.path.join(ROOT, f"{name}.py")) & SCRIPTS


def test_no_test_changes_the_import_path():
    for path in glob.glob(os.path.join(ROOT, "tests", "*.py")):
        calls = [n for n in ast.walk(ast.parse(open(path, encoding="utf-8").read())) if isinstance(n, ast.Call)]
        assert not [c for c in calls if ast.unparse(c.func) in ("sys.path.insert", "sys.path.append")], path


def test_gen_output_is_the_one_made_before_the_move(demo_data, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # as the golden run: the thread count changes the order of float sums
    try:
        run_golden_command(demo_data, tmp_path)
    finally:
        torch.set_num_threads(threads)
    compare_with_golden(tmp_path)


def run_golden_command(demo_data, tmp_path):
    targets = [os.path.join(demo_data, c, f"{c}-a-p001.png") for c in ("dots1", "stripes1")]
    # every channel in the refinement, as the default compared them when the golden images were made
    gen.main([*targets, "--backbone", "random", "--steps", "8", "--refine-steps", "4", "--polish-steps", "3",
              "--refine-channels", "none", "--dtype", "fp32", "--device", "cpu", "--snapshot-every", "0",
              "--gen-dir", str(tmp_path)])


def compare_with_golden(tmp_path):
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    same_arithmetic = (torch.__version__, torch.backends.cpu.get_cpu_capability(), amx) == GOLDEN_ARITHMETIC
    for label in ("dots1", "stripes1"):
        now = np.asarray(Image.open(tmp_path / label / "final.png"), dtype=np.int16)
        before = np.asarray(Image.open(os.path.join(GOLDEN, f"{label}.png")), dtype=np.int16)
        if same_arithmetic:  # byte for byte where the floating-point arithmetic is the same
            assert np.array_equal(now, before), label
        else:  # elsewhere rounding differs: the same texture, pixel for pixel within a few grey levels
            assert np.abs(now - before).mean() < 2, (label, np.abs(now - before).mean())
