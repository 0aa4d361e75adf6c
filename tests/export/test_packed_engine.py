"""PackedModel on the packed C engine: bit-exact with the numpy reference path and PyTorch on every zoo
model, input shape and instruction-set path; the chains it forms; bad files and inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bnn_tune.export import PackedFormatError, PackedModel, pack_model
from bnn_tune.export._chains import chain_end
from bnn_tune.kernels import available_isas, engine_available
from bnn_tune.nn import build_model, list_models

from .test_packed_model import _randomize

pytestmark = pytest.mark.skipif(not engine_available(), reason="no C compiler for the packed engine")
ISAS = available_isas() if engine_available() else []

SHAPES = [  # every zoo model, square / odd / non-square inputs, widths giving channel counts off 32 and 16
    ("mlp", (1, 8, 8), 0.125),
    ("mlp", (40,), 0.3),
    ("binarynet", (1, 8, 8), 0.0625),
    ("binarynet", (3, 12, 9), 0.1),
    ("vgg_small", (3, 16, 16), 0.0625),
    ("vgg_small", (2, 9, 11), 0.3),
    ("birealnet18", (1, 8, 8), 0.125),
    ("birealnet18", (3, 8, 16), 0.1),
]


def test_every_zoo_model_is_covered():
    # binarynet_paper zero-pads binarized inputs: export rejects it (tests/nn/test_models.py)
    assert {c[0] for c in SHAPES} | {"binarynet_paper"} == set(list_models())


# every ISA on the chain-forming models; birealnet18 (slow numpy reference, one-conv chains) on the best
CASES = [(*s, isa) for s in SHAPES for isa in ISAS if s[0] != "birealnet18" or isa == ISAS[-1]]


@pytest.mark.parametrize("name,shape,width,isa", CASES)
def test_engine_bit_exact_with_numpy_reference_and_pytorch(name, shape, width, isa):
    torch.manual_seed(0)
    model = _randomize(build_model(name, shape, 10, width=width), seed=2)
    pm = pack_model(model, input_shape=shape)
    x = torch.randn(13, *shape) * 2
    pm.set_cpu_engine(False)
    ref, ref1 = pm.logits(x), pm.logits(x[:1])
    pm.set_cpu_engine(True, threads=2, isa=isa)
    got = pm.logits(x)
    assert pm._chains, "the engine ran no chain"
    np.testing.assert_array_equal(got, ref)  # same bits, same float ops after them
    np.testing.assert_array_equal(pm.logits(x[:1]), ref1)  # batch 1: other buffers, channel split
    with torch.no_grad():
        assert (got.argmax(1) == model(x).argmax(1).numpy()).all()


def test_chains_cover_the_binary_layers():
    """binarynet: one chain from the batch-norm sign to the last binary FC; vgg_small: to the last pool;
    birealnet18: one chain per binary conv (integer output, the shortcut is real)."""
    def chains(ops):
        out, i = [], 0
        while i < len(ops):
            j = chain_end(ops, i)
            if j > i:
                out.append([op.kind for op in ops[i:j]])
            i = max(j, i + 1)
        return out

    bn = pack_model(build_model("binarynet", (3, 16, 16), 10, width=0.125).eval())
    (c,) = chains(bn.ops)
    assert c[0] == "batchnorm_sign" and c[-1] == "binary_linear"
    assert c.count("binary_conv2d") == 5 and c.count("maxpool2d") == 3 and c.count("binary_linear") == 2
    vs = pack_model(build_model("vgg_small", (3, 16, 16), 10, width=0.125).eval())
    (c,) = chains(vs.ops)
    assert c[-1] == "maxpool2d" and c.count("binary_conv2d") == 5
    br = pack_model(build_model("birealnet18", (3, 16, 16), 10, width=0.125).eval())
    body = [op.body for op in br.ops if op.kind == "residual"]
    assert all(chains(b) == [["binary_conv2d"]] for b in body)


def test_threads_do_not_change_results():
    from bnn_tune.kernels._engine import set_min_parallel_work

    model = _randomize(build_model("vgg_small", (3, 16, 16), 10, width=0.125), seed=5)
    pm = pack_model(model, input_shape=(3, 16, 16))
    x = torch.randn(9, 3, 16, 16)
    outs = []
    set_min_parallel_work(0)  # split even these small layers
    try:
        for t in (1, 2, 5):
            pm.set_cpu_engine(True, threads=t)
            outs.append(pm.logits(x))
    finally:
        set_min_parallel_work(1 << 17)
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])


def test_bad_settings_and_files():
    model = build_model("binarynet", (1, 8, 8), 10, width=0.0625).eval()
    pm = pack_model(model, input_shape=(1, 8, 8))
    with pytest.raises(ValueError, match="threads"):
        pm.set_cpu_engine(True, threads=0)
    with pytest.raises(ValueError, match="isa='mmx'"):
        pm.set_cpu_engine(True, isa="mmx")
    with pytest.raises(ValueError, match=r"of shape \(N, 1, 8, 8\), but got shape \(2, 1, 16, 8\)"):
        pm.logits(torch.randn(2, 1, 16, 8))  # refused at the entry, naming the expected shape
    # a file without a stored input shape reaches the engine, which refuses a chain that cannot fit
    bare = PackedModel(dict(pm.header, model={k: v for k, v in pm.header["model"].items() if k != "input_shape"}),
                       pm.tensors)
    with pytest.raises(PackedFormatError, match="do not fit an input of shape"):
        bare.logits(torch.randn(2, 1, 16, 8))  # the flatten no longer matches the first FC
    header = dict(pm.header, bit_convention=dict(pm.header["bit_convention"], conv_patch_order="c,kh,kw"))
    with pytest.raises(PackedFormatError, match=r"conv_patch_order='c,kh,kw'.*re-export"):
        PackedModel(header, pm.tensors)
    layers = [dict(op) for op in pm.header["layers"]]
    conv = next(op for op in layers if op["op"] == "binary_conv2d")
    conv["in_channels"] += 1
    with pytest.raises(PackedFormatError, match="k=.*channels has k="):
        PackedModel(dict(pm.header, layers=layers), pm.tensors)
