"""The CUDA kernels build without a GPU and without a CUDA toolkit: NVRTC from torch's wheels compiles
every source to a cubin for sm_80 and sm_90 (with nvcc off PATH), without register spills; the
error-code helper and the tensor checks of every kernel argument work on CPU/meta tensors.
The nvcc path is checked too when nvcc is installed."""

from __future__ import annotations

import glob
import importlib.util
import os
import re
import shutil
import subprocess

import pytest
import torch

from bnn_tune.kernels import _nvrtc, cuda

needs_nvrtc = pytest.mark.skipif(not _nvrtc.nvrtc_available(), reason="cuda-bindings/NVRTC not installed")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Every kernel for sm_80 and sm_90 with no nvcc anywhere (PATH holds no CUDA directory, no
    CUDA_HOME) into a fresh XDG_CACHE_HOME; ``(cache dir, {(source, arch): cubin path})``."""
    if not _nvrtc.nvrtc_available():
        pytest.skip("cuda-bindings/NVRTC not installed (they come with torch's CUDA wheels)")
    xdg = tmp_path_factory.mktemp("xdg")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATH", "/usr/bin:/bin")
        mp.delenv("CUDA_HOME", raising=False)
        mp.delenv("BNN_TUNE_CUDA_COMPILER", raising=False)
        mp.delenv("BNN_TUNE_CACHE", raising=False)
        mp.setenv("XDG_CACHE_HOME", str(xdg))
        if _nvrtc.nvcc_path() is not None:
            pytest.skip("nvcc is installed in /usr/bin here")
        assert _nvrtc.compiler() == "nvrtc"
        paths = _nvrtc.build_all(cuda.ARCHS)
        # cached: a second build returns the same files without recompiling
        mtimes = {k: p.stat().st_mtime_ns for k, p in paths.items()}
        assert _nvrtc.build_all(cuda.ARCHS) == paths
        assert {k: p.stat().st_mtime_ns for k, p in paths.items()} == mtimes
    return xdg / "bnn_tune" / "cuda", paths


@pytest.mark.parametrize("arch", cuda.ARCHS)
def test_every_kernel_compiles_with_nvrtc_without_nvcc(built, arch):
    cache, paths = built
    for src in cuda.sources():
        path = paths[(src.name, arch)]
        assert path.parent == cache  # honours XDG_CACHE_HOME
        assert f"_sm{arch}_nvrtc_" in path.name
        cubin = path.read_bytes()
        assert _nvrtc.cubin_arch(cubin) == int(arch)
        for name in cuda.kernel_names()[src.name]:  # every entry point is in the image, unmangled
            assert b"\0" + name.encode() + b"\0" in cubin, (src.name, name)
        log = path.with_suffix(".log").read_text()  # ptxas -v: one report per kernel, no spills, no warnings
        spills = [(int(s), int(ld)) for s, ld in re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)]
        assert len(spills) == len(cuda.kernel_names()[src.name]), log
        assert all(s == 0 and ld == 0 for s, ld in spills), log
        assert "warning" not in log.lower(), log


def _cuobjdump():
    found = shutil.which("cuobjdump")
    spec = importlib.util.find_spec("triton")
    if not found and spec and spec.submodule_search_locations:
        cands = glob.glob(os.path.join(spec.submodule_search_locations[0], "backends", "nvidia", "bin", "cuobjdump"))
        found = cands[0] if cands else None
    return found


def _sass(path):
    """``{function name: SASS text}`` of a cubin (one cuobjdump run)."""
    dump = _cuobjdump()
    if dump is None:
        pytest.skip("cuobjdump not found")
    text = subprocess.run([dump, "-sass", str(path)], capture_output=True, text=True, check=True).stdout
    parts = re.split(r"Function : (\w+)", text)
    return dict(zip(parts[1::2], parts[2::2]))


@pytest.mark.parametrize("arch", cuda.ARCHS)
def test_sass_has_the_bandwidth_design(built, arch):
    _, paths = built
    for fun, sass in _sass(paths[("bmma.cu", arch)]).items():  # bnn_bmma and the implicit-GEMM bnn_bconv
        assert "BMMA.168256.AND.POPC" in sass, fun  # native b1 tensor-core op, not an emulation
        assert "LDGSTS" in sass and "LDGDEPBAR" in sass, fun  # cp.async pipeline
    gemv = _sass(paths[("bgemv.cu", arch)])
    for fun in ("bnn_gemv_b1_fused", "bnn_gemv_b4_fused", "bnn_gemv_b16_fused"):
        before_barrier = gemv[fun].split("BAR.SYNC")[0]
        # both rows x 4 uint4 of the first chunk and the 2 thresholds are in flight before the barrier
        assert before_barrier.count("LDG.E.128") >= 8, fun
        assert re.search(r"LDG\.E\.CONSTANT R", before_barrier), fun


@needs_nvrtc
def test_compile_error_raises_with_code_name_and_log(tmp_path):
    bad = tmp_path / "bad.cu"
    bad.write_text('extern "C" __global__ void k(int* p) { p[0] = undefined_name; }\n')
    with pytest.raises(_nvrtc.CudaError, match=r"NVRTC_ERROR_COMPILATION(?s:.*)undefined_name"):
        _nvrtc.nvrtc_compile(bad, "90")


def test_check_raises_with_the_error_name():
    driver = pytest.importorskip("cuda.bindings.driver")
    nvrtc = pytest.importorskip("cuda.bindings.nvrtc")
    with pytest.raises(_nvrtc.CudaError, match=r"cuModuleLoadData\(x\) failed: CUDA_ERROR_INVALID_IMAGE"):
        _nvrtc.check((driver.CUresult.CUDA_ERROR_INVALID_IMAGE, None), "cuModuleLoadData(x)")
    with pytest.raises(_nvrtc.CudaError, match="nvrtcCompileProgram failed: NVRTC_ERROR_INVALID_OPTION"):
        _nvrtc.check((nvrtc.nvrtcResult.NVRTC_ERROR_INVALID_OPTION,), "nvrtcCompileProgram")
    assert _nvrtc.check((driver.CUresult.CUDA_SUCCESS, 7), "x") == 7
    assert _nvrtc.check((driver.CUresult.CUDA_SUCCESS, 1, 2), "x") == (1, 2)
    assert _nvrtc.check((nvrtc.nvrtcResult.NVRTC_SUCCESS,), "x") is None


def test_arch_below_sm80_and_unknown_compiler_rejected(monkeypatch):
    with pytest.raises(ValueError, match="sm_80 or newer"):
        _nvrtc.compile_cubin("bmma.cu", "75")
    monkeypatch.setenv("BNN_TUNE_CUDA_COMPILER", "clang")
    with pytest.raises(ValueError, match="BNN_TUNE_CUDA_COMPILER must be 'nvrtc' or 'nvcc', but got 'clang'"):
        _nvrtc.compiler()


def test_cubin_arch_rejects_non_cuda_elf():
    with pytest.raises(ValueError, match="not a 64-bit ELF"):
        _nvrtc.cubin_arch(b"garbage" * 10)
    host_elf = open("/bin/sh", "rb").read(64)
    with pytest.raises(ValueError, match="not EM_CUDA"):
        _nvrtc.cubin_arch(host_elf)


def test_nvcc_path_builds_the_same_kernels(tmp_path, monkeypatch):
    if _nvrtc.nvcc_path() is None:
        pytest.skip("nvcc not installed (the optional second compiler)")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("BNN_TUNE_CACHE", raising=False)
    monkeypatch.setenv("BNN_TUNE_CUDA_COMPILER", "nvcc")
    assert _nvrtc.compiler() == "nvcc"
    path = _nvrtc.compile_cubin("pack_sign.cu", "90")
    assert "_nvcc_" in path.name and _nvrtc.cubin_arch(path.read_bytes()) == 90


# ------------------------------------------------------------------ argument checks (CPU / meta tensors)
META = torch.device("meta")


def _t(shape, dtype=torch.int32, device=META):
    return torch.empty(shape, dtype=dtype, device=device)


def test_check_tensor_accepts_a_good_argument():
    t = _t((3, 8))
    assert cuda.check_tensor(t, "w", dtype=torch.int32, shape=(None, 8), device=META, words=True) is t


@pytest.mark.parametrize("t,kwargs,match", [
    (_t((3, 8), torch.float32), {}, r"`w` must have dtype torch.int32, but got dtype=torch.float32"),
    (_t((3, 8), device=torch.device("cpu")), {"device": None}, r"`w` must be on a CUDA device, but got device=cpu"),
    (_t((3, 8), device=torch.device("cpu")), {}, r"`w` must be on meta like the other arguments, but got device=cpu"),
    (_t((3, 16)), {}, r"`w` must have shape \[\*, 8\], but got shape=\[3, 16\]"),
    (_t((3, 8, 1)), {}, r"`w` must have shape \[\*, 8\], but got shape=\[3, 8, 1\]"),
    (_t((8, 3)).T, {}, r"`w` must be contiguous, but got stride=\(1, 3\)"),
    (None, {}, r"`w` is required"),
])
def test_check_tensor_rejects(t, kwargs, match):
    args = {"dtype": torch.int32, "shape": (None, 8), "device": META, **kwargs}
    with pytest.raises(ValueError, match=match):
        cuda.check_tensor(t, "w", **args)


def test_check_tensor_alignment_and_row_stride():
    base = torch.zeros(3 * 8 + 1, dtype=torch.int32)
    with pytest.raises(ValueError, match=r"`a` must start on a 16-byte boundary.*address % 16 = 4"):
        cuda.check_tensor(base[1:].view(3, 8), "a", dtype=torch.int32, shape=(3, 8), device="cpu", words=True)
    wide = torch.zeros(2, 40)
    assert cuda.check_tensor(wide[:, :33], "x", dtype=torch.float32, shape=(2, 33), device="cpu",
                             row_contiguous=True) is not None  # a row stride >= the row length is fine
    with pytest.raises(ValueError, match=r"`x` needs unit stride"):
        cuda.check_tensor(wide[:, ::2], "x", dtype=torch.float32, shape=(2, 20), device="cpu", row_contiguous=True)


def test_kernel_wrappers_check_before_launch():
    """The public kernels reject CPU tensors and bad shapes before anything reaches the driver."""
    w = torch.zeros(4, 8, dtype=torch.int32)
    with pytest.raises(ValueError, match="`w` must be on a CUDA device"):
        cuda.gemv(w, 256, a=torch.zeros(1, 8, dtype=torch.int32))
    with pytest.raises(ValueError, match="`x` must be on a CUDA device"):
        cuda.pack_sign(torch.zeros(2, 5), 8)
    with pytest.raises(ValueError, match="`a` must be on a CUDA device"):
        cuda.bmma(w, w, 256, torch.zeros(4, dtype=torch.int32), torch.zeros(4, dtype=torch.int32))


def test_gemv_plan_gives_small_layers_enough_blocks():
    # 8 rows per block: a 4096-row layer fills 132 SMs several times over (the old design launched 128)
    assert cuda.gemv_plan(4096, 128, 1, fused=False, threshold=False, out_words=0) == ("bnn_gemv_b1_packed", 512, 0)
    assert cuda.gemv_plan(4096, 128, 1, fused=False, threshold=True, out_words=128) == ("bnn_gemv_b1_packed", 512, 0)
    assert cuda.gemv_plan(70, 16, 3, fused=True, threshold=False, out_words=0) == ("bnn_gemv_b4_fused", 9, 3 * 16 * 4)
    assert cuda.gemv_plan(10, 8, 16, fused=True, threshold=False, out_words=0)[0] == "bnn_gemv_b16_fused"


# ------------------------------------------------- host/device agreement (what a GPU run would trust blindly)
def _signatures():
    """``{kernel name: [ctypes type per parameter]}`` parsed from the ``extern "C" __global__`` kernels."""
    import ctypes

    sigs = {}
    for src in cuda.sources():
        text = src.read_text().replace("\\\n", " ")  # join macro lines
        found = dict(re.findall(r'extern "C" __global__ void (?:__launch_bounds__\([^)]*\)\s*)?(\w+)\((.*?)\)\s*\{',
                                text, re.S))
        macro_params = found.pop("NAME", None)  # the GEMV entry-point macro, instantiated per name
        for name in re.findall(r"^BNN_GEMV_ENTRY\((\w+),", text, re.M):
            sigs[name] = macro_params
        sigs.update(found)
    out = {}
    for name, params in sigs.items():
        types = []
        for p in params.split(","):
            p = " ".join(p.split())
            types.append(ctypes.c_void_p if "*" in p else ctypes.c_longlong if "long long" in p else ctypes.c_int)
        out[name] = types
    return out


def test_every_entry_point_has_a_parsed_signature():
    sigs = _signatures()
    assert set(sigs) == {n for names in cuda.kernel_names().values() for n in names}
    assert len(sigs["bnn_gemv_b1_packed"]) == 12 and len(sigs["bnn_bmma"]) == 9 and len(sigs["bnn_bconv"]) == 17


def test_wrappers_pass_arguments_matching_the_kernel_signatures(monkeypatch):
    """The ctypes list each wrapper hands to cuLaunchKernel has the kernel's parameter count and types
    (a long long passed as int would shift every later argument on the GPU)."""
    calls = []
    monkeypatch.setattr(cuda, "launch", lambda dev, src, name, grid, block, args, smem=0, stream=0:
                        calls.append((src, name, grid, block, args, smem)))
    monkeypatch.setattr(cuda, "check_tensor", lambda t, *a, **k: t)
    monkeypatch.setattr(cuda, "_stream", lambda d: 0)
    monkeypatch.setattr(cuda, "_index", lambda d: 0)
    i32 = torch.int32
    w = torch.zeros(45, 16, dtype=i32)
    cuda.pack_sign(torch.zeros(3, 300), 16)
    cuda.gemv(w, 300, x=torch.zeros(3, 300))
    cuda.gemv(w, 300, a=torch.zeros(1, 16, dtype=i32), thr=torch.zeros(45, dtype=i32), out_words=8)
    cuda.gemv(w, 300, a=torch.zeros(9, 16, dtype=i32))
    cuda.bmma(torch.zeros(70, 16, dtype=i32), w, 300, torch.zeros(70, dtype=i32), torch.zeros(45, dtype=i32))
    act = cuda.pack_nhwc(torch.zeros(2, 40, 5, 7), (1, 1), 1.0)
    assert act.shape == (2, 7, 9, 2)
    cuda.bconv(act, torch.zeros(9, 24, dtype=i32), 360, torch.zeros(9, dtype=i32), kernel_size=(3, 3), stride=(2, 1))
    sigs = _signatures()
    assert [c[1] for c in calls] == ["bnn_pack_sign", "bnn_gemv_b4_fused", "bnn_gemv_b1_packed", "bnn_gemv_b16_packed",
                                     "bnn_bmma", "bnn_pack_nhwc", "bnn_bconv"]
    for src, name, _grid, _block, args, _smem in calls:
        assert name in cuda.kernel_names()[src]
        assert [t for _, t in args] == sigs[name], name
    # grids: pack_sign (rows, words / 8); gemv 8 rows per block (int32) / 4 bytes per out word (threshold)
    assert calls[0][2:4] == ((3, 2, 1), (256, 1, 1))
    assert calls[1][2:4] == ((6, 1, 1), (128, 1, 1)) and calls[1][5] == 3 * 16 * 4
    assert calls[2][2] == (32, 1, 1) and calls[2][4][-1][0] == 32  # out_ld in bytes
    assert calls[4][2:4] == ((1, 2, 1), (256, 1, 1))
    assert calls[5][2] == (-(-2 * 7 * 9 * 2 // 256), 1, 1)
    assert calls[6][2] == (1, 1, 1)  # 2 x 3 x 7 = 42 output pixels (one 64-row block), 9 channels
    assert [v for v, _ in calls[6][4][2:15]] == [42, 9, 360, 24, 7, 9, 2, 3, 9, 3, 7, 2, 1]


def test_python_and_mirror_constants_match_the_sources():
    from bnn_tune.kernels import _mirror

    def defines(name):
        return {k: int(v) for k, v in re.findall(r"#define (\w+) (\d+)\b", (cuda.CSRC / name).read_text())}

    g, b = defines("bgemv.cu"), defines("bmma.cu")
    assert (g["GEMV_WARPS"], g["GEMV_ROWS_PER_WARP"], g["GEMV_UNROLL"]) == (
        _mirror.GEMV_WARPS, _mirror.GEMV_ROWS_PER_WARP, _mirror.GEMV_UNROLL)
    assert g["GEMV_WARPS"] * 32 == cuda.GEMV_THREADS and g["GEMV_MAX_B"] == cuda.GEMV_MAX_B
    assert g["GEMV_WARPS"] * g["GEMV_ROWS_PER_WARP"] == cuda.GEMV_TILE_ROWS == _mirror.GEMV_TILE_ROWS
    assert (b["BM"], b["BN"], b["BMMA_THREADS"]) == (cuda.BMMA_BM, cuda.BMMA_BN, cuda.BMMA_THREADS)
    assert (b["BM"], b["BN"], b["BMMA_THREADS"], b["STAGE_WORDS"], b["SROW"], b["BMMA_STAGES"]) == (
        _mirror.BM, _mirror.BN, _mirror.BMMA_THREADS, _mirror.STAGE_WORDS, _mirror.SROW, _mirror.BMMA_STAGES)


def test_launch_passes_the_stream_and_raises_the_driver_error_by_name(monkeypatch):
    """launch() hands cuLaunchKernel torch's stream and the (value, type) tuples; a failing code becomes a
    CudaError naming it and the kernel (the driver is faked: no GPU here)."""
    driver = pytest.importorskip("cuda.bindings.driver")
    import ctypes

    seen = {}

    def fake_launch(f, gx, gy, gz, bx, by, bz, smem, stream, params, extra):
        seen.update(f=f, grid=(gx, gy, gz), block=(bx, by, bz), smem=smem, stream=int(stream), params=params)
        return (driver.CUresult.CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES,)

    monkeypatch.setattr(_nvrtc, "function", lambda dev, src, name: "F")
    monkeypatch.setattr(driver, "cuLaunchKernel", fake_launch)
    with pytest.raises(_nvrtc.CudaError, match=r"cuLaunchKernel\(bnn_bmma, grid=\(2, 3, 1\).*CUDA_ERROR_LAUNCH_OUT_OF_RES"):
        _nvrtc.launch(0, "bmma.cu", "bnn_bmma", (2, 3, 1), (256, 1, 1), [(None, ctypes.c_void_p), (7, ctypes.c_int)],
                      stream=1234)
    assert seen == {"f": "F", "grid": (2, 3, 1), "block": (256, 1, 1), "smem": 0, "stream": 1234,
                    "params": ((0, 7), (ctypes.c_void_p, ctypes.c_int))}


@needs_nvrtc
def test_unwritable_cache_compiles_in_memory(tmp_path, monkeypatch):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("")
    monkeypatch.setenv("BNN_TUNE_CACHE", str(blocker))  # cache_dir() is a file: mkdir fails
    with pytest.warns(UserWarning, match="not writable.*BNN_TUNE_CACHE"):
        cubin = _nvrtc.cubin_bytes("pack_sign.cu", "80")
    assert _nvrtc.cubin_arch(cubin) == 80
