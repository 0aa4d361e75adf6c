"""The op table: every op kind has a handler in every backend table; unknown kinds fail with one clear line."""

from __future__ import annotations

import dataclasses
import importlib

import numpy as np
import pytest
import torch

from bnn_tune.export import PackedFormatError, PackedModel, pack_model
from bnn_tune.export._graph import OP_TYPES, TABLES, Op, OpTable, ReLU, walk
from bnn_tune.nn import build_model, list_models

from .test_packed_model import _randomize

# every backend module, each of which makes its table when imported
BACKENDS = {"read": "_header", "write": "_header", "reference": "_reference", "engine": "_chains",
            "cuda": "_cuda_runner", "lce": "_lce"}


@pytest.fixture(scope="module", autouse=True)
def _load_backends():
    for mod in set(BACKENDS.values()):
        importlib.import_module(f"bnn_tune.export.{mod}")


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_every_table_handles_every_op_kind(backend):
    assert TABLES[backend].kinds() == set(OP_TYPES)


def test_no_table_without_a_known_backend():
    assert set(TABLES) == set(BACKENDS)


def test_op_kinds_are_dataclasses_with_distinct_names():
    assert all(dataclasses.is_dataclass(t) and issubclass(t, Op) for t in OP_TYPES.values())
    assert sorted(OP_TYPES) == sorted(t.kind for t in OP_TYPES.values())


def test_the_zoo_compiles_to_most_kinds():
    seen: set[str] = set()
    for name in list_models():
        if name == "binarynet_paper":  # zero padding: no packed form
            continue
        for act in ({}, {"activation": None}):
            shape = (40,) if name == "mlp" else (3, 16, 16)
            pm = pack_model(build_model(name, shape, 10, width=0.125, **act).eval())
            seen |= {op.kind for op in walk(pm.ops)}
    assert set(OP_TYPES) - seen == {"relu"}  # relu: only in hand-built models (test_relu_model_runs)


def test_relu_model_runs():
    model = _randomize(torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3)), seed=0)
    pm = pack_model(model, input_shape=(6,))
    assert [op.kind for op in pm.ops] == ["linear", "relu", "linear"]
    x = torch.randn(4, 6)
    np.testing.assert_allclose(pm.logits(x), model(x).detach().numpy(), rtol=1e-5, atol=1e-5)


def test_unknown_op_in_a_header_is_one_clear_error():
    pm = pack_model(build_model("mlp", (8,), 3, width=0.05))
    layers = [dict(op) for op in pm.header["layers"]]
    layers[1]["op"] = "lstm"
    with pytest.raises(PackedFormatError) as info:
        PackedModel(dict(pm.header, layers=layers), pm.tensors)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith("Unknown op 'lstm' in the packed model header (layer '1'); this version reads [")
    assert "'binary_linear'" in msg


def test_missing_field_and_missing_tensor_name_the_layer():
    pm = pack_model(build_model("mlp", (8,), 3, width=0.05))
    layers = [dict(op) for op in pm.header["layers"]]
    del layers[1]["weight"]
    with pytest.raises(PackedFormatError, match=r"^Layer '1' \(linear\): the header entry lacks the field 'weight'\.$"):
        PackedModel(dict(pm.header, layers=layers), pm.tensors)
    tensors = {k: v for k, v in pm.tensors.items() if k != "1.weight"}
    with pytest.raises(PackedFormatError, match=r"tensor '1\.weight' \(layer '1'\)"):
        PackedModel(pm.header, tensors)


def test_a_table_without_a_kind_names_backend_and_kind():
    table: OpTable = OpTable("test_only")
    try:
        @table.register(ReLU)
        def _relu(op):
            return op

        assert table(ReLU(name="r")) is _relu
        with pytest.raises(NotImplementedError, match=r"The test_only backend has no handler for op kind 'flatten' "
                                                      r"\(layer 'f'\); it handles \['relu'\]\."):
            table(OP_TYPES["flatten"](name="f"))
        with pytest.raises(ValueError, match="has a test_only handler already"):
            table.register(ReLU)(_relu)
        with pytest.raises(ValueError, match="exists already"):
            OpTable("test_only")
    finally:
        del TABLES["test_only"]


def test_dispatch_is_by_exact_kind():
    # batchnorm_sign subclasses batchnorm but has its own handler: it emits bits, batchnorm floats
    from bnn_tune.export._graph import BatchNorm, BatchNormSign
    from bnn_tune.export._reference import REFERENCE, run_reference

    one = np.ones(2, np.float32)
    x = torch.tensor([[-1.0, 2.0]])
    assert REFERENCE(BatchNorm(name="b", scale=one, shift=one)) is not REFERENCE(BatchNormSign(name="s", scale=one,
                                                                                               shift=one))
    assert run_reference([BatchNorm(name="b", scale=one, shift=one)], x).tolist() == [[0.0, 3.0]]
    assert run_reference([BatchNormSign(name="s", scale=one, shift=one)], x).tolist() == [[True, True]]


@pytest.mark.parametrize("name,shape", [("binarynet", (1, 8, 8)), ("birealnet18", (1, 8, 8)), ("mlp", (40,))])
def test_header_round_trips_through_the_typed_ops(name, shape):
    from bnn_tune.export._header import read_graph, write_graph

    pm = pack_model(_randomize(build_model(name, shape, 10, width=0.125), seed=3), input_shape=shape)
    tensors: dict[str, np.ndarray] = {}
    assert write_graph(read_graph(pm.header["layers"], pm.tensors), tensors) == pm.header["layers"]
    assert sorted(tensors) == sorted(pm.tensors)
    for k, v in tensors.items():
        np.testing.assert_array_equal(v, pm.tensors[k])


@pytest.mark.parametrize("padding", [(1, 0), (0, 2), (2, 1)])
def test_reference_real_conv_on_signs_pads_each_axis_by_its_own_amount(padding):
    """A real-weight conv reading binarized input pads the +-1 map with pad_value: ph rows, pw columns."""
    import torch.nn.functional as F

    from bnn_tune.export._graph import Conv2d
    from bnn_tune.export._reference import run_reference

    g = torch.Generator().manual_seed(sum(padding))
    x = torch.randn(2, 3, 5, 4, generator=g)
    w = torch.randn(4, 3, 3, 3, generator=g)
    op = Conv2d(name="c", weight=w.numpy(), bias=None, input_sign=True, stride=(1, 1), padding=padding, pad_value=-1.0)
    ph, pw = padding
    want = F.conv2d(F.pad(torch.where(x >= 0, 1.0, -1.0), (pw, pw, ph, ph), value=-1.0), w)
    got = run_reference([op], x)
    torch.testing.assert_close(got, want)
