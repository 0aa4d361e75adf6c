"""Packed model: PyTorch parity for every zoo model, BN folding edge cases, file format errors."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from torch import nn

from bnn_tune.export import PackedFormatError, PackedModel, load_packed, pack_model, save_packed
from bnn_tune.kernels import pack_bits, unpack_bits
from bnn_tune.nn import build_model, list_models


def _randomize(model: nn.Module, seed: int, *, zero_scale: bool = True) -> nn.Module:
    """Random BN statistics/affine (about a third negative scales, some zero) and latent weights."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=g) * 3)
                m.running_var.copy_(torch.rand(c, generator=g) * 4 + 0.2)
                w = torch.randn(c, generator=g)
                if zero_scale and c >= 4:
                    w[torch.randperm(c, generator=g)[: max(1, c // 8)]] = 0.0
                m.weight.copy_(w)
                m.bias.copy_(torch.randn(c, generator=g))
            elif isinstance(m, (nn.Linear, nn.Conv2d)):
                m.weight.normal_(generator=g)
                if m.bias is not None:
                    m.bias.normal_(generator=g)
    return model.eval()


CASES = [
    ("mlp", (1, 8, 8), 0.125),
    ("mlp", (40,), 0.3),
    ("binarynet", (1, 8, 8), 0.0625),
    ("vgg_small", (3, 16, 16), 0.0625),
    ("birealnet18", (1, 8, 8), 0.125),
]


@pytest.mark.parametrize("name,shape,width", CASES)
def test_packed_matches_pytorch(name, shape, width, tmp_path):
    torch.manual_seed(0)
    model = _randomize(build_model(name, shape, 10, width=width), seed=1)
    x = torch.randn(200, *shape) * 2
    with torch.no_grad():
        ref = model(x)
    path = tmp_path / "m.bnn.safetensors"
    save_packed(model, path, config={"model": name, "width": width}, input_shape=shape)
    pm = load_packed(path)
    got = pm.logits(x)
    assert (pm.predict(x) == ref.argmax(1).numpy()).all()
    np.testing.assert_allclose(got, ref.numpy(), rtol=1e-4, atol=1e-3 * float(ref.abs().max()))
    assert pm.header["model"]["name"] == name


def test_every_zoo_model_is_covered():
    # binarynet_paper zero-pads binarized inputs (the Bop paper's network): export rejects it, see
    # tests/nn/test_models.py::test_binarynet_paper_trains_with_bop_and_export_rejects_it_clearly
    assert {c[0] for c in CASES} | {"binarynet_paper"} == set(list_models())


def test_fold_is_exercised_negative_and_zero_scales():
    model = _randomize(build_model("binarynet", (1, 8, 8), 10, width=0.0625), seed=3)
    pm = pack_model(model, input_shape=(1, 8, 8))
    folded = [op for op in pm.header["layers"] if op.get("threshold")]
    assert len(folded) >= 5  # 5 binary convs + 2 binary FC, thresholds folded
    flips = np.concatenate([pm.tensors[op["flip"]] for op in folded])
    assert 0 < flips.sum() < len(flips)
    pooled = [op for op in pm.header["layers"] if op["op"] == "maxpool2d" and op["and_channels"]]
    assert pooled, "max-pools between a binary conv and its batch-norm must pool bits (OR/AND)"
    ks = [op["k"] for op in folded]
    thr = np.concatenate([pm.tensors[op["threshold"]] for op in folded])
    assert thr.dtype == np.int32
    assert any(t in (-k, k + 1) for op, k in zip(folded, ks) for t in pm.tensors[op["threshold"]])


def test_zero_scale_channel_is_constant():
    torch.manual_seed(0)
    model = build_model("mlp", (8,), 3, width=0.05, depth=2).eval()
    bn = model[4]  # BN after the first binary layer
    with torch.no_grad():
        bn.weight.zero_()
        bn.bias.copy_(torch.where(torch.arange(bn.num_features) % 2 == 0, 0.5, -0.5))
    x = torch.randn(64, 8)
    pm = pack_model(model)
    np.testing.assert_allclose(pm.logits(x), model(x).detach().numpy(), rtol=1e-5, atol=1e-4)


def test_binary_weights_use_sign_of_latent_and_custom_quantizer():
    class Tanh(nn.Module):
        def forward(self, w):
            return torch.tanh(3 * w)

    torch.manual_seed(0)
    model = _randomize(build_model("mlp", (16,), 4, width=0.1), seed=2)
    model[3].weight_quantizer = Tanh()  # e.g. BMD during training: export still uses sign
    pm = pack_model(model)
    op = next(op for op in pm.header["layers"] if op["name"] == "3")
    bits = unpack_bits(pm.tensors[op["weight"]], op["k"])
    flip = pm.tensors[op["flip"]].astype(bool)
    expect = (model[3].weight.detach() >= 0).numpy()
    expect[flip] = ~expect[flip]
    assert (bits == expect).all()


def test_activation_none_binary_weights_real_inputs():
    torch.manual_seed(0)
    model = _randomize(build_model("vgg_small", (1, 8, 8), 5, width=0.0625, activation=None), seed=4)
    x = torch.randn(20, 1, 8, 8)
    pm = pack_model(model)
    assert any(op["op"] == "binary_weight_conv2d" for op in pm.header["layers"])
    np.testing.assert_allclose(pm.logits(x), model(x).detach().numpy(), rtol=1e-4, atol=1e-3)


def test_header_contents(tmp_path):
    model = _randomize(build_model("mlp", (1, 8, 8), 10, width=0.125), seed=0)
    path = tmp_path / "m.bnn.safetensors"
    save_packed(model, path, config={"model": "mlp", "width": 0.125, "dataset": "digits"}, input_shape=(1, 8, 8))
    pm = load_packed(path)
    h = pm.header
    assert h["format_version"] == 2 and h["bit_convention"]["bit_order"] == "lsb_first"
    assert h["bit_convention"]["one_means"] == 1
    assert h["checksum"]["algorithm"] == "sha256"
    b = next(op for op in h["layers"] if op["op"] == "binary_linear")
    assert b["k"] == 32 and b["k_padded"] == 256 and "output_shape" in b
    w = pm.tensors[b["weight"]]
    assert w.dtype == np.uint32 and w.shape == (32, 8)
    np.testing.assert_array_equal(pm.tensors[b["popcount"]], np.bitwise_count(w).sum(1))
    assert pm.config["dataset"] == "digits"
    assert pm.weight_bytes()["binary"] == 2 * 32 * 32
    assert isinstance(repr(pm), str)


def test_bit_convention_lsb_first():
    bits = np.zeros(40, bool)
    bits[[0, 3, 33]] = True
    w = pack_bits(bits)
    assert w.dtype == np.uint32 and w.shape == (8,)
    assert w[0] == 0b1001 and w[1] == 0b10 and not w[2:].any()
    np.testing.assert_array_equal(unpack_bits(w, 40), bits)


@pytest.fixture
def packed_file(tmp_path):
    model = _randomize(build_model("mlp", (1, 8, 8), 10, width=0.125), seed=0)
    path = tmp_path / "m.bnn.safetensors"
    save_packed(model, path)
    return path


def test_corrupted_data_raises(packed_file):
    raw = bytearray(packed_file.read_bytes())
    raw[-5] ^= 0xFF
    packed_file.write_bytes(bytes(raw))
    with pytest.raises(PackedFormatError, match="checksum mismatch"):
        load_packed(packed_file)


def test_truncated_raises(packed_file):
    raw = packed_file.read_bytes()
    packed_file.write_bytes(raw[: len(raw) - 100])
    with pytest.raises(PackedFormatError, match="truncated or corrupted"):
        load_packed(packed_file)
    packed_file.write_bytes(raw[:5])
    with pytest.raises(PackedFormatError, match="truncated or corrupted"):
        load_packed(packed_file)


def test_version_mismatch_raises(packed_file):
    from safetensors import safe_open
    from safetensors.numpy import save_file

    with safe_open(str(packed_file), framework="np") as f:
        header = json.loads(f.metadata()["bnn_tune"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    header["format_version"] = 99
    save_file(tensors, str(packed_file), metadata={"bnn_tune": json.dumps(header)})
    with pytest.raises(PackedFormatError, match=r"version 99.*reads versions \[1, 2\]"):
        load_packed(packed_file)


def test_version_1_file_loads_without_transform(packed_file):
    """A file written before the input transform existed (format version 1) still loads and predicts."""
    from safetensors import safe_open
    from safetensors.numpy import save_file

    from bnn_tune.export._format import checksum

    with safe_open(str(packed_file), framework="np") as f:
        header = json.loads(f.metadata()["bnn_tune"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    del header["input_transform"]
    header["format_version"] = 1
    header["checksum"]["value"] = checksum(header, tensors)
    save_file(tensors, str(packed_file), metadata={"bnn_tune": json.dumps(header)})
    pm = load_packed(packed_file)
    assert pm.input_transform is None and pm.header["input_transform"] is None
    x = torch.randn(5, 1, 8, 8)
    np.testing.assert_array_equal(pm.logits(x), pm.logits(x, preprocessed=True))


def test_wrong_input_shape_names_expected_shape():
    pm = pack_model(build_model("mlp", (1, 8, 8), 10, width=0.125).eval(), input_shape=(1, 8, 8))
    with pytest.raises(ValueError, match=r"of shape \(N, 1, 8, 8\), but got shape \(3, 1, 9, 9\)"):
        pm.predict(np.zeros((3, 1, 9, 9), np.float32))


def test_not_a_bnn_file_and_missing(tmp_path):
    from safetensors.numpy import save_file

    p = tmp_path / "other.safetensors"
    save_file({"a": np.zeros(3, np.float32)}, str(p))
    with pytest.raises(PackedFormatError, match="no bnn-tune header"):
        load_packed(p)
    with pytest.raises(FileNotFoundError):
        load_packed(tmp_path / "nope.safetensors")


def test_header_tamper_detected(packed_file):
    from safetensors import safe_open
    from safetensors.numpy import save_file

    with safe_open(str(packed_file), framework="np") as f:
        header = json.loads(f.metadata()["bnn_tune"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    header["layers"][2]["k"] = 31
    save_file(tensors, str(packed_file), metadata={"bnn_tune": json.dumps(header)})
    with pytest.raises(PackedFormatError, match="checksum"):
        load_packed(packed_file)


def test_unsupported_module_raises():
    with pytest.raises(ValueError, match="Cannot export module.*GELU"):
        pack_model(nn.Sequential(nn.Linear(3, 3), nn.GELU()))


def test_packed_model_is_not_pickle(packed_file):
    assert packed_file.read_bytes()[:8] != b"\x80\x04\x95" and os.path.getsize(packed_file) > 0
    assert isinstance(load_packed(packed_file), PackedModel)


@pytest.mark.cuda
@pytest.mark.parametrize("name,shape,width", CASES)
@pytest.mark.parametrize("batch", [3, 40])  # CUDA-core GEMV and tensor-core GEMM paths
def test_packed_on_cuda_matches_cpu(name, shape, width, batch):
    from bnn_tune.kernels import cuda

    if not torch.cuda.is_available():  # with a GPU, kernels that cannot be built fail the test
        pytest.skip("no CUDA GPU")
    assert cuda.available(), "a GPU is visible but neither NVRTC nor nvcc was found"
    model = _randomize(build_model(name, shape, 10, width=width), seed=1)
    x = torch.randn(batch, *shape) * 2
    pm = pack_model(model)
    with torch.no_grad():
        ref = model(x)
    np.testing.assert_array_equal(pm.predict(x, device="cuda"), ref.argmax(1).numpy())
    np.testing.assert_allclose(pm.logits(x, device="cuda"), pm.logits(x), rtol=1e-4, atol=1e-3)


def test_bad_device():
    pm = pack_model(build_model("mlp", (8,), 3, width=0.05))
    with pytest.raises(ValueError, match="`device` must be 'cpu' or 'cuda"):
        pm.logits(torch.zeros(1, 8), device="tpu")


@pytest.fixture
def cuda_on_cpu(monkeypatch):
    """Stand-in for bnn_tune.kernels.cuda whose kernels are the numpy mirrors of the CUDA code."""
    from bnn_tune.export import _cuda_runner
    from bnn_tune.kernels import binary_gemm, popcount_rows
    from bnn_tune.kernels import cuda as real_cuda
    from bnn_tune.kernels._mirror import mirror_bconv, mirror_bmma, mirror_gemv, mirror_pack_nhwc

    class FakeCuda:
        calls: list[str] = []
        tap_aligned_weight = staticmethod(real_cuda.tap_aligned_weight)

        @staticmethod
        def pack_nhwc(x, padding, pad_value):
            xn = x.numpy()
            if xn.size <= 4000:  # the mirror is slow: use it on small maps
                return torch.from_numpy(mirror_pack_nhwc(xn, padding, pad_value).view(np.int32))
            ph, pw = padding
            xs = np.pad(xn >= 0, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=pad_value > 0)
            n, c, h, w = xs.shape
            full = np.zeros((n, h, w, -(-c // 32) * 32), bool)
            full[..., :c] = xs.transpose(0, 2, 3, 1)
            return torch.from_numpy(pack_bits(full.reshape(-1, full.shape[-1]))[:, : -(-c // 32)]
                                    .reshape(n, h, w, -1).view(np.int32))

        @staticmethod
        def bconv(act, w, k, pw, *, kernel_size, stride):
            FakeCuda.calls.append("bconv")
            au, wu = act.numpy().view(np.uint32), w.numpy().view(np.uint32)
            n, hp, wp, cw = au.shape
            kh, kw = kernel_size
            ho, wo = (hp - kh) // stride[0] + 1, (wp - kw) // stride[1] + 1
            if n * ho * wo * wu.shape[0] <= 5000:
                return torch.from_numpy(mirror_bconv(au, wu, k, pw.numpy(), kernel_size=kernel_size, stride=stride))
            rows = [au[:, i: i + stride[0] * (ho - 1) + 1: stride[0], j: j + stride[1] * (wo - 1) + 1: stride[1]]
                    for i in range(kh) for j in range(kw)]  # tap-aligned patch words, [n, ho, wo, cw] each
            cols = np.concatenate(rows, -1).reshape(n * ho * wo, kh * kw * cw)
            cols = np.pad(cols, ((0, 0), (0, wu.shape[1] - cols.shape[1])))
            return torch.from_numpy(binary_gemm(cols, wu, k).reshape(n, ho, wo, -1))

        @staticmethod
        def available():
            return True

        @staticmethod
        def pack_sign(x, wd):
            w = pack_bits(x.numpy() >= 0)
            assert w.shape[1] == wd
            return torch.from_numpy(w.view(np.int32)), torch.from_numpy(popcount_rows(w))

        @staticmethod
        def gemv(w, k, *, a=None, x=None, thr=None, out_words=None):
            FakeCuda.calls.append("gemv" if thr is None else "gemv_threshold_" + ("packed" if a is not None else "x"))
            src = {"a": a.numpy().view(np.uint32)} if a is not None else {"x": x.numpy()}
            assert len(next(iter(src.values()))) <= 16
            res = mirror_gemv(w.numpy().view(np.uint32), k, thr=None if thr is None else thr.numpy(),
                              out_ld=out_words, **src)
            return torch.from_numpy(res.view(np.int32) if thr is not None else res)

        @staticmethod
        def bmma(a, w, k, pa, pw):
            FakeCuda.calls.append("bmma")
            au, wu = a.numpy().view(np.uint32), w.numpy().view(np.uint32)
            if a.shape[0] * w.shape[0] <= 5000:  # the mirror is slow: use it on small problems
                return torch.from_numpy(mirror_bmma(au, wu, k, pa.numpy(), pw.numpy()))
            return torch.from_numpy(binary_gemm(au, wu, k))

    monkeypatch.setattr(_cuda_runner, "cuda", FakeCuda)
    return FakeCuda


@pytest.mark.parametrize("name,shape,width", CASES)
def test_cuda_runner_logic_on_cpu(name, shape, width, cuda_on_cpu):
    """The GPU executor (weight re-ordering for unfold, kernel choice, thresholds) with mirrored kernels."""
    from bnn_tune.export._cuda_runner import CudaRunner

    model = _randomize(build_model(name, shape, 10, width=width), seed=1)
    pm = pack_model(model)
    runner = CudaRunner(pm, device="cpu")
    for batch in (3, 20):
        x = torch.randn(batch, *shape) * 2
        np.testing.assert_allclose(runner.logits(x).numpy(), pm.logits(x), rtol=1e-4, atol=1e-3)
    assert "bmma" in cuda_on_cpu.calls or name != "mlp"
    assert "bconv" in cuda_on_cpu.calls or name == "mlp"
    if name == "mlp":  # hidden binary layers at batch 3 chain packed bits: threshold output read as packed input
        assert {"gemv_threshold_x", "gemv_threshold_packed"} <= set(cuda_on_cpu.calls), cuda_on_cpu.calls


def test_zero_weights_pack_as_plus_one_like_the_model():
    """sign(0) = +1 in the model (binarize), so +0.0 and -0.0 latent weights are +1 bits in the file, and the packed
    logits follow the model's."""
    torch.manual_seed(0)
    model = _randomize(build_model("mlp", (16,), 4, width=0.1), seed=3, zero_scale=False)
    with torch.no_grad():
        w = model[3].weight
        w[::2] = 0.0
        w[1::4] = -0.0
    pm = pack_model(model)
    op = next(op for op in pm.header["layers"] if op["name"] == "3")
    bits = unpack_bits(pm.tensors[op["weight"]], op["k"])
    flip = pm.tensors[op["flip"]].astype(bool)
    bits[flip] = ~bits[flip]
    assert bits[::2].all() and bits[1::4].all()
    x = torch.randn(64, 16, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ref = model(x)
    np.testing.assert_allclose(pm.logits(x), ref.numpy(), rtol=1e-4, atol=1e-3 * float(ref.abs().max()))


def test_weight_bytes_split_packed_words_from_the_rest():
    torch.manual_seed(0)
    pm = pack_model(_randomize(build_model("mlp", (16,), 4, width=0.1), seed=2))
    sizes = pm.weight_bytes()
    bits = [v for k, v in pm.tensors.items() if k.endswith(".weight_bits")]
    assert bits and sizes["binary"] == sum(4 * v.size for v in bits)  # uint32 words
    assert sizes["real"] == sum(v.nbytes for k, v in pm.tensors.items() if not k.endswith(".weight_bits")) > 0


def test_raw_input_is_transformed_unless_preprocessed():
    """logits/predict take raw input by default and apply the stored transform; preprocessed=True skips it."""
    from bnn_tune.data._base import InputTransform

    torch.manual_seed(0)
    model = _randomize(build_model("mlp", (16,), 4, width=0.1), seed=5)
    tr = InputTransform(raw_shape=(16,), raw_dtype="float32", input_shape=(16,), mean=(3.0,) * 16, std=(0.5,) * 16,
                        divide_by=2.0)
    pm = pack_model(model, input_transform=tr)
    raw = torch.randn(32, 16, generator=torch.Generator().manual_seed(6)) * 4 + 6
    with torch.no_grad():
        ref = model((raw / 2.0 - 3.0) / 0.5)
    np.testing.assert_allclose(pm.logits(raw), ref.numpy(), rtol=1e-4, atol=1e-3 * float(ref.abs().max()))
    np.testing.assert_array_equal(pm.predict(raw), ref.argmax(1).numpy())
    np.testing.assert_array_equal(pm.logits((raw / 2.0 - 3.0) / 0.5, preprocessed=True), pm.logits(raw))


@pytest.mark.parametrize("bad", ["dtype", "shape"])
def test_packed_weight_of_the_wrong_dtype_or_shape_is_refused(bad, packed_file, tmp_path):
    """Either mistake alone is a format error (a file written consistently, with a valid checksum)."""
    from bnn_tune.export._format import write_packed_file

    pm = load_packed(packed_file)
    key = next(k for k in pm.tensors if k.endswith(".weight_bits"))
    w = pm.tensors[key]
    tensors = dict(pm.tensors)
    tensors[key] = w.astype(np.int32) if bad == "dtype" else np.concatenate([w, w[:1]])
    path = tmp_path / "bad.bnn.safetensors"
    write_packed_file(path, pm.header, tensors)
    with pytest.raises(PackedFormatError, match="packed weight has dtype"):
        load_packed(path)
