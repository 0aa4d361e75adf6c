"""The fast training step changes no number: trajectories are bit-identical to the reference.

The fingerprints below were recorded from the code *before* the step was optimised (issue 14: fused
sign, cheaper STE masks, weight quantizer skipped for +-1 weights, in-place optimizer updates), with
one CPU thread. Each is the SHA-256 of the model's state dict and the optimizer state after 6 steps
(and a validation pass) on a fixed seed, for every optimizer and every activation quantizer. A
change that alters one bit of one weight, moment or batch-norm statistic changes the hash.
"""

from __future__ import annotations

import hashlib

import pytest
import torch

from bnn_tune.train import Trainer

REFERENCE = [
    (dict(optimizer="bmd", model="mlp", dataset="digits"), "762c8278dc20a730"),
    (dict(optimizer="bnew", model="mlp", dataset="digits"), "1c20c85509464c9c"),
    (dict(optimizer="bop", model="mlp", dataset="digits"), "6fedc302c73e1295"),
    (dict(optimizer="bop2", model="mlp", dataset="digits"), "94ff3666dc719010"),
    (dict(optimizer="filter", model="mlp", dataset="digits"), "365e2ba1e1f12ebd"),
    (dict(optimizer="latent_adam", model="mlp", dataset="digits"), "6f1bdf758caf4fdf"),
    (dict(optimizer="bop", model="binarynet", dataset="synthetic", width=0.125), "63b5ed6dce598dcf"),
    (dict(optimizer="latent_adam", model="binarynet", dataset="synthetic", width=0.125), "a73f1b66e40665ad"),
    (dict(optimizer="latent_adam", model="mlp", dataset="digits", activation="approx_sign"), "f83485d4ad4fdea4"),
    (dict(optimizer="bop", model="mlp", dataset="digits", activation="swish_sign"), "16ff8e4c5628ddb3"),
    (dict(optimizer="filter", model="birealnet18", dataset="synthetic", width=0.125), "800efb0c494a42f5"),
]


def trajectory_fingerprint(config: dict) -> str:
    """SHA-256 prefix of model + optimizer state after one capped epoch on one CPU thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t = Trainer(dict(config, epochs=1, max_steps_per_epoch=6, batch_size=32, seed=3))
        t.train_epoch()
    finally:
        torch.set_num_threads(threads)
    h = hashlib.sha256()
    for k, v in sorted(t.model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    for st in t.optimizer.state.values():
        for k in sorted(st):
            if torch.is_tensor(st[k]):
                h.update(st[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@pytest.mark.parametrize("config,expected", REFERENCE, ids=[
    "-".join(str(v) for v in c.values()) for c, _ in REFERENCE])
def test_training_trajectory_is_bit_identical_to_the_reference(config, expected):
    assert trajectory_fingerprint(config) == expected
