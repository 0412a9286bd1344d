"""gen.py --heap keep: the memory a CPU run frees stays mapped for its own reuse (memory.keep_freed)."""
import json
import os
import re
import subprocess
import sys

import pytest

import bench
import gen
from texture.run import memory

GLIBC = memory.glibc() is not None

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Eight times a block of 64 MB (above glibc's 32 MB mapping threshold) allocated, written and freed
# through the C library: the pages the last four faulted in, with memory.keep_freed first when argv[1]
# is "keep". (torch aligns its blocks, so a block it frees is not always large enough for the next one:
# gen.py's passes, which free many blocks together, reuse most of theirs, not all.)
REUSE = """
import ctypes, resource, sys, torch
from texture.run import memory
if sys.argv[1] == "keep":
    assert memory.keep_freed(0, torch.device("cpu"))
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
for i in range(8):
    if i == 4:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(64 << 20)
    ctypes.memset(block, 1, 64 << 20)
    libc.free(block)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
# Twelve rounds of two 64 MB blocks freed with a small tensor kept from each round, which lands in
# the holes they leave: kept, the heap grows by a block or two every round. Prints the growth of the
# resident memory in MB, and whether bound_kept (called each round when argv[1] is "bounded", with its
# cap 128 MB above the start) returned to releasing.
HOLES = """
import sys, torch
from texture.run import memory
assert memory.keep_freed(0, torch.device("cpu"))
start = memory.resident()
memory._kept["cap"] = start + (128 << 20)
small, released = [], False
for i in range(12):
    a, b = torch.ones(16 << 20), torch.ones(16 << 20)
    small.append(torch.ones(100))
    del a, b
    if sys.argv[1] == "bounded":
        released = memory.bound_kept() or released
print((memory.resident() - start) >> 20, released)
"""


def run(script, how):
    return subprocess.run([sys.executable, "-c", script, how], capture_output=True, text=True, check=True,
                          cwd=ROOT).stdout.split()


@pytest.mark.skipif(not GLIBC, reason="the C library is not glibc: its allocator is left as it is")
def test_kept_memory_is_reused_without_faulting_its_pages_in_again():
    pages = (64 << 20) // os.sysconf("SC_PAGE_SIZE")
    faults = {how: int(run(REUSE, how)[0]) for how in ("keep", "release")}
    assert faults["release"] > 4 * pages / 2  # a fresh mapping each time: every page faulted in again
    assert faults["keep"] < pages / 10


@pytest.mark.skipif(not GLIBC, reason="the C library is not glibc: its allocator is left as it is")
def test_kept_memory_that_outgrows_its_cap_is_returned_to_the_system():
    grown, released = run(HOLES, "keep")
    assert int(grown) > 192 and released == "False"  # the pattern bound_kept is there for (257 to 1153 MB seen)
    grown, released = run(HOLES, "bounded")
    assert int(grown) < 128 + 128 + 32 and released == "True"


def test_gen_records_release_when_the_kept_peak_would_not_fit(trained_ckpt, demo_data, tmp_path, monkeypatch):
    """A 32 px output needs about memory.SYNTHESIS_FIXED: with that and a little more free, the run still
    goes (released memory), and args.json records release; with plenty free it records keep (glibc)."""
    target = os.path.join(demo_data, "dots1", "dots1-a-p001.png")
    free = {"tight": 1.2 * memory.SYNTHESIS_FIXED, "plenty": 100 * memory.GB}
    for case, have in free.items():
        monkeypatch.setattr(memory, "available", lambda device: have)
        out = tmp_path / case
        gen.main([target, "--ckpt", trained_ckpt, "--image-size", "32", "--steps", "2", "--refine-steps", "0",
                  "--gen-dir", str(out)])
        recorded = json.loads((out / "dots1" / "args.json").read_text())["heap"]
        assert recorded == ("keep" if case == "plenty" and GLIBC else "release")


def test_bench_heap_section_runs_gen_whole_with_each_choice(tmp_path, monkeypatch, capsys):
    """bench.py --bench-sections heap at tiny settings: a tileable 64 px output of a 32 px crop and a
    batch of two, each run by gen.py once per choice; the figures are there, none is asserted."""
    monkeypatch.chdir(tmp_path)
    result = bench.main(["--quick", "--image-size", "32", "--bench-repeats", "1", "--bench-sections", "heap",
                         "--bench-heap-side", "64", "--bench-heap-steps", "3", "--bench-batch-targets", "2",
                         "--bench-batch-side", "32", "--bench-dir", "out"])["heap"]
    assert set(result) == {"large", "batch"} and result["batch"]["targets"] == 2
    for d in result.values():
        assert all(len(d["runs"][m]) == 1 for m in ("keep", "release"))
        for run in (r for runs in d["runs"].values() for r in runs):
            assert run["seconds"] > 0 and run["wall"] > run["seconds"] and run["peak_gb"] > 0.1
            assert run["released_at"] is None  # a few MB above the start: far below the cap
        assert all(v > 0 for v in d["ratio"].values())
    assert "--refine-steps" in result["batch"]["argv"] and "--tile" in result["large"]["argv"]
    out = capsys.readouterr().out
    assert "64 px tileable: synthesis s, keep / release" in out and "2 targets 32 px: peak GB, keep / release" in out
    assert re.search(r"^heap +2 targets 32 px: keep runs released from iteration +-$", out, re.M)


def test_bench_heap_section_names_a_size_gen_refuses(tmp_path, monkeypatch):
    """A --bench-heap-side that gen.py cannot tile is gen.py's one-line error, named for the section."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match=r"^--bench-sections heap: gen.py failed: --size 40 40: must be at least 32 "
                                         r"and a multiple of 16 with --tile"):
        bench.main(["--quick", "--image-size", "32", "--bench-sections", "heap", "--bench-heap-side", "40",
                    "--bench-batch-targets", "0", "--bench-dir", "out"])
    assert not (tmp_path / "out").exists()
