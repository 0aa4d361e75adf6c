import pytest

from bnn_tune.config import ConfigError, TrialConfig


def test_defaults_and_round_trip():
    cfg = TrialConfig.from_dict({})
    assert cfg.dataset == "digits" and cfg.optimizer == "latent_adam"
    again = TrialConfig.from_dict(cfg.to_dict())
    assert again == cfg
    assert cfg.replace(epochs=3).epochs == 3


def test_unknown_key_suggests_closest():
    with pytest.raises(ConfigError, match=r"Unknown key 'epoch'\. Did you mean 'epochs'\?"):
        TrialConfig.from_dict({"epoch": 3})
    with pytest.raises(ConfigError, match=r"Unknown key 'batchsize'\. Did you mean 'batch_size'\?"):
        TrialConfig.from_dict({"batchsize": 3})


@pytest.mark.parametrize(
    "key, value, pattern",
    [
        ("epochs", 0, r"`epochs` must be an integer >= 1, but got epochs=0\."),
        ("epochs", 2.5, r"`epochs` must be an integer >= 1, but got epochs=2.5\."),
        ("batch_size", -1, r"`batch_size` must be an integer >= 1"),
        ("lr", 0.0, r"`lr` must be a finite number > 0, but got lr=0.0\."),
        ("lr", "fast", r"`lr` must be a finite number > 0, but got lr='fast'\."),
        ("lr", float("nan"), r"`lr` must be a finite number > 0, but got lr=nan\."),
        ("val_fraction", 1.0, r"`val_fraction` must be in \(0, 1\), but got val_fraction=1.0\."),
        ("bn_momentum", 1.5, r"`bn_momentum` must be in \[0, 1\]"),
        ("width", 0, r"`width` must be in \(0, 16\]"),
        ("dataset", "digit", r"`dataset` must be one of \[.*\], but got dataset='digit'\. Did you mean 'digits'\?"),
        ("model", "vgg", r"`model` must be one of"),
        ("activation", "sign", r"`activation` must be one of"),
        ("device", "gpu", r"`device` must be 'cpu', 'cuda', 'cuda:N' or 'auto', but got device='gpu'\."),
        ("augment", "yes", r"`augment` must be True or False"),
        ("optimizer", "bopp", r"Unknown optimizer 'bopp'\. Available: \["),
        ("seed", True, r"`seed` must be an integer"),
    ],
)
def test_out_of_range_values_name_value_and_range(key, value, pattern):
    with pytest.raises(ConfigError, match=pattern):
        TrialConfig.from_dict({key: value})


def test_integral_floats_are_accepted_for_int_keys():
    # Ray/Optuna sometimes hand over 10.0 for an integer dimension.
    assert TrialConfig.from_dict({"epochs": 10.0}).epochs == 10


def test_optimizer_hyperparameters_are_validated_by_the_optimizer():
    cfg = TrialConfig.from_dict({"optimizer": "latent_adam", "clip_value": 0.5})
    assert cfg.optimizer_params["clip_value"] == 0.5
    with pytest.raises(ConfigError, match="clip_value=-1"):
        TrialConfig.from_dict({"optimizer": "latent_adam", "clip_value": -1})


def test_schedules():
    cfg = TrialConfig.from_dict({"lr_schedule": "step:every=2,factor=0.5"})
    assert cfg.schedules == {"lr": "step:every=2,factor=0.5"}
    with pytest.raises(ConfigError, match="type must be one of"):
        TrialConfig.from_dict({"lr_schedule": {"type": "stepp"}})
    with pytest.raises(ConfigError, match=r"Unknown key 'evry'"):
        TrialConfig.from_dict({"lr_schedule": {"type": "step", "evry": 2}})


def test_non_mapping_config():
    with pytest.raises(ConfigError, match="must be a mapping"):
        TrialConfig.from_dict([("epochs", 1)])  # type: ignore[arg-type]
