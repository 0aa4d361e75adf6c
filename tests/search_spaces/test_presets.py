"""bnn_tune.search_spaces.presets: storage with provenance, lookup errors, the shipped file validates."""

from __future__ import annotations

import json

import pytest

from bnn_tune.config import ConfigError, TrialConfig
from bnn_tune.search_spaces import presets


def test_record_get_list_round_trip(tmp_path):
    path = tmp_path / "presets.json"
    p = presets.record("latent_adam", "digits", "mlp", {"latent_lr": 1e-3, "init_scale": 1e-2, "epochs": 5},
                       command="bnn-tune search --optimizer latent_adam --samples 16", metric="val_acc",
                       value=0.93, n_trials=16, date="2026-11-23T05:00:00Z", path=path)
    assert presets.get("latent_adam", "digits", "mlp", path=path) == p
    assert presets.list(path=path) == [p]
    assert p.provenance.command.startswith("bnn-tune search") and p.provenance.value == 0.93
    cfg = p.as_config(epochs=2)
    assert cfg["optimizer"] == "latent_adam" and cfg["epochs"] == 2
    TrialConfig.from_dict(cfg)
    # replacing keeps one entry per key
    presets.record("latent_adam", "digits", "mlp", {"latent_lr": 2e-3}, command="c", metric="val_acc", value=0.94,
                   path=path)
    assert len(presets.list(path=path)) == 1
    assert presets.get("latent_adam", path=path).config == {"latent_lr": 2e-3}
    doc = json.loads(path.read_text())
    assert doc["format_version"] == 1 and doc["presets"][0]["provenance"]["date"]


def test_missing_preset_names_what_exists(tmp_path):
    path = tmp_path / "p.json"
    presets.record("latent_adam", "digits", "mlp", {}, command="c", metric="val_acc", value=0.5, path=path)
    with pytest.raises(KeyError, match=r"No preset for optimizer='bop', dataset='digits', model='mlp'\. "
                                       r"Available: \[\('latent_adam', 'digits', 'mlp'\)\]"):
        presets.get("bop", path=path)


def test_record_validates_config_and_needs_provenance(tmp_path):
    with pytest.raises(ConfigError, match="Unknown key 'epoch'"):
        presets.record("latent_adam", "digits", "mlp", {"epoch": 3}, command="c", metric="m", value=0.1,
                       path=tmp_path / "p.json")
    with pytest.raises(ValueError, match="provenance"):
        presets.record("latent_adam", "digits", "mlp", {}, command="", metric="m", value=0.1, path=tmp_path / "p.json")
    assert not (tmp_path / "p.json").exists()


def test_bad_format_version_raises(tmp_path):
    path = tmp_path / "p.json"
    path.write_text('{"format_version": 99, "presets": []}')
    with pytest.raises(ValueError, match="`format_version` must be 1, but got 99"):
        presets.list(path=path)


def test_shipped_presets_load_and_validate():
    from bnn_tune import optim

    for p in presets.list():
        assert p.provenance.command and p.provenance.date and p.provenance.metric
        if p.optimizer in optim.list_optimizers():
            TrialConfig.from_dict(p.as_config())
