"""CI check of the CUDA sources: they compile for sm_90 (cubin and PTX) without register spills."""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess

import pytest

from bnn_tune.kernels import cuda

NVCC = cuda.nvcc_path()
pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc not found")
SOURCES = [str(p) for p in cuda.sources()]


def _cuobjdump():
    found = shutil.which("cuobjdump")
    if found:
        return found
    import importlib.util

    spec = importlib.util.find_spec("triton")
    if spec and spec.submodule_search_locations:
        cands = glob.glob(os.path.join(spec.submodule_search_locations[0], "backends", "nvidia", "bin", "cuobjdump"))
        return cands[0] if cands else None
    return None


def test_sources_present():
    names = {os.path.basename(s) for s in SOURCES}
    assert {"bgemv.cu", "bmma.cu", "pack_sign.cu"} <= names


@pytest.mark.parametrize("src", SOURCES, ids=os.path.basename)
def test_compiles_for_sm90_without_spills(src, tmp_path):
    cubin = tmp_path / "k.cubin"
    proc = subprocess.run([NVCC, "-O3", "-std=c++17", "-arch=sm_90", "-cubin", "-Xptxas", "-v", "-I",
                           str(cuda.CSRC), src, "-o", str(cubin)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    log = proc.stderr
    spills = [(int(s), int(ld)) for s, ld in re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)]
    assert spills, log
    assert all(s == 0 and ld == 0 for s, ld in spills), log
    assert "warning" not in log.lower(), log
    ptx = subprocess.run([NVCC, "-std=c++17", "-arch=sm_90", "-ptx", "-I", str(cuda.CSRC), src, "-o",
                          str(tmp_path / "k.ptx")], capture_output=True, text=True)
    assert ptx.returncode == 0, ptx.stderr
    text = (tmp_path / "k.ptx").read_text()
    if src.endswith("bmma.cu"):
        assert "mma.sync.aligned.m16n8k256.row.col.s32.b1.b1.s32.and.popc" in text
        dump = _cuobjdump()
        if dump:  # the tensor-core instruction is native on sm_90 (no xor.popc emulation)
            sass = subprocess.run([dump, "-sass", str(cubin)], capture_output=True, text=True).stdout
            assert "BMMA.168256.AND.POPC" in sass
    if src.endswith("bgemv.cu"):
        assert "ld.global.nc.v4.u32" in text  # 16-byte weight loads


def test_shared_library_builds(tmp_path):
    proc = subprocess.run(cuda.compile_command(tmp_path / "lib.so", "90"), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    nm = shutil.which("nm")
    if nm:
        syms = subprocess.run([nm, "-D", str(tmp_path / "lib.so")], capture_output=True, text=True).stdout
        for f in ("bnn_pack_sign", "bnn_gemv", "bnn_bmma"):
            assert f in syms
