"""Files written before the op-table refactor (format version 2) still load, run, and are what the packer writes.

``tests/export/data/*.bnn.safetensors`` were written by bnn-tune at commit 2165c98 (string-dispatched ops) from
the models :func:`_golden_model` builds. The packer today must write the same header and tensors for them (the
file format did not change), and a loaded golden file must give the same logits as the model packed today.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bnn_tune.export import load_packed, pack_model
from bnn_tune.nn import build_model

from .test_packed_model import _randomize

DATA = Path(__file__).parent / "data"
GOLDEN = [("mlp", (1, 8, 8), 0.125, {}), ("binarynet", (1, 8, 8), 0.0625, {}), ("vgg_small", (3, 16, 16), 0.0625, {}),
          ("birealnet18", (1, 8, 8), 0.125, {}), ("vgg_small", (1, 8, 8), 0.0625, {"activation": None})]


def _golden_model(name, shape, width, kw):
    torch.manual_seed(0)
    return _randomize(build_model(name, shape, 10, width=width, **kw), seed=1)


@pytest.mark.parametrize("name,shape,width,kw", GOLDEN, ids=lambda v: v if isinstance(v, str) else None)
def test_golden_file_loads_and_matches_todays_packer(name, shape, width, kw):
    tag = name + ("_real_act" if kw else "")
    old = load_packed(DATA / f"{tag}.bnn.safetensors")
    model = _golden_model(name, shape, width, kw)
    new = pack_model(model, {"model": name, "width": width}, input_shape=shape)
    assert {k: v for k, v in new.header.items() if k != "checksum"} == \
        {k: v for k, v in old.header.items() if k != "checksum"}
    assert sorted(new.tensors) == sorted(old.tensors)
    for key, arr in old.tensors.items():
        assert new.tensors[key].dtype == arr.dtype, key
        np.testing.assert_array_equal(new.tensors[key], arr, err_msg=key)
    x = torch.randn(16, *shape, generator=torch.Generator().manual_seed(3)) * 2
    np.testing.assert_array_equal(old.logits(x), new.logits(x))
    with torch.no_grad():
        assert (old.predict(x) == model(x).argmax(1).numpy()).all()
