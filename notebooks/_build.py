"""Build the example notebooks from the cell sources below (``python notebooks/_build.py``).

The notebooks are generated, not hand-edited, so they stay reproducible and reviewable as Python: edit
this file, run it, commit both. They are written without outputs; ``tests/notebooks/test_notebooks.py``
executes every one of them (small settings, each well under 2 minutes on a laptop CPU). Each notebook
says in its first cell how to scale the settings up.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

SETUP = '''\
# Setup: import this checkout (also works without `pip install -e .`), plots inline, quiet Ray.
import os, sys, pathlib, tempfile
ROOT = pathlib.Path.cwd().resolve()
if ROOT.name == "notebooks":
    ROOT = ROOT.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])  # for Ray workers
%matplotlib inline
import matplotlib.pyplot as plt
plt.rcParams["figure.dpi"] = 80
'''


def md(text: str):
    return new_markdown_cell(text.strip("\n"))


def code(text: str):
    return new_code_cell(text.strip("\n"))


# ------------------------------------------------------------------------------------------ 01
NB01 = [
    md("""
# 01 - Quickstart: an Optuna search of Bop on digits, with the flip-rate pruner

Bop (Helwegen et al. 2019) has no latent weights: it keeps an exponential moving average `m` of each
binary weight's gradient, `m <- (1 - gamma) m + gamma g`, and flips the weight when `|m| > tau` and
`m` agrees in sign with it. Its two hyperparameters act directly on the **flip rate** (the fraction of
binary weights that change sign per step): low `gamma` / high `tau` freeze the network, high `gamma` /
low `tau` make it noisy.

This notebook

1. runs an Optuna study over the `bop` search space (`bnn_tune.search_spaces.bop.suggest`: `gamma`, `threshold`
   (= tau), a `gamma` schedule and Adam's `lr` for the real-valued parameters),
2. prunes runs whose flip rate **collapses** before they learned (`bnn_tune.plugins.optuna.FlipRatePruner`),
3. plots accuracy and flip rate of every trial, and the hyperparameter importance,
4. writes the HTML report (`bnn-tune report`).

Settings are small (digits, MLP at half width, 5 epochs, 8 trials: about a minute on a laptop CPU).
For a real search raise `EPOCHS`, `N_TRIALS` and `width`, or use the CLI:
`bnn-tune search --backend optuna --optimizer bop --samples 64 --epochs 30 --out runs/bop`
(or without `--backend optuna`: the same search on Ray Tune).
"""),
    code(SETUP),
    code('''
import optuna
import bnn_tune
from bnn_tune import viz
from bnn_tune.plugins.optuna import FlipRatePruner

optuna.logging.set_verbosity(optuna.logging.WARNING)
EPOCHS, N_TRIALS = 5, 8
BASE = {"dataset": "digits", "model": "mlp", "width": 0.5, "epochs": EPOCHS, "seed": 0}
RUN = pathlib.Path(tempfile.mkdtemp(prefix="bnn_tune_nb01_"))   # a study.db lands here
study = optuna.create_study(
    study_name="bop-digits", storage=f"sqlite:///{RUN / 'study.db'}", direction="maximize",
    sampler=optuna.samplers.TPESampler(seed=0),
    pruner=FlipRatePruner(n_warmup_steps=2, patience=2),   # the collapse rule, see plugins/_collapse.py
)
# Two settings from the paper to anchor the search, and one that freezes the binary weights
# (tiny gamma, large tau: the flip rate collapses and the pruner stops the trial).
study.enqueue_trial({"gamma": 1e-3, "threshold": 1e-6, "gamma_schedule": "constant", "lr": 1e-2})
study.enqueue_trial({"gamma": 1e-4, "threshold": 1e-8, "gamma_schedule": "constant", "lr": 1e-2})
study.enqueue_trial({"gamma": 1e-6, "threshold": 1e-3, "gamma_schedule": "constant", "lr": 1e-2})
study.optimize(bnn_tune.objective("bop", base_config=BASE, artifact_dir=RUN), n_trials=N_TRIALS)
print(f"best trial {study.best_trial.number}: val_acc={study.best_value:.4f}", study.best_params)
'''),
    code('''
df = study.trials_dataframe(attrs=("number", "value", "state", "params"))
df["epochs"] = [len(t.user_attrs.get("bnn_tune:log_flip_rate", [])) for t in study.trials]
df.sort_values("value", ascending=False)
'''),
    md("""
Why was a trial pruned? The pruner writes its reason into the trial's user attrs
(`bnn_tune:prune_reason`); the per-epoch series are in `bnn_tune:log_flip_rate` and `bnn_tune:val_acc`.
"""),
    code('''
for t in study.trials:
    if t.state.name == "PRUNED":
        print(f"trial {t.number}: gamma={t.params['gamma']:.2g} threshold={t.params['threshold']:.2g}")
        print("   log flip rate per epoch:", [round(v, 2) for v in t.user_attrs["bnn_tune:log_flip_rate"]])
        print("   reason:", t.user_attrs.get("bnn_tune:prune_reason"))
'''),
    md("""
## Flip rate and accuracy per trial

The log flip rate `log(flip_rate + e^-9)` (eq. 7 of the Bop paper) sits at -9 when nothing flips. A
collapsed trial (red) is flat at the floor from the first epoch: its binary layers never change, only
the real-valued first/last layers and batch norm learn, and the pruner stops it after the warm-up. The
best trial (black) keeps a moderate flip rate that decays as it converges.
"""),
    code('''
fig, axes = plt.subplots(1, 2, figsize=(13, 4))
viz.plot_flip_rates(study, ax=axes[0])
for t in study.trials:
    acc = t.user_attrs.get("bnn_tune:val_acc", [])
    color = {"COMPLETE": "tab:blue", "PRUNED": "tab:red"}.get(t.state.name, "tab:gray")
    best = t.number == study.best_trial.number
    axes[1].plot(range(1, len(acc) + 1), acc, color="black" if best else color, lw=2.5 if best else 1)
axes[1].set(xlabel="epoch", ylabel="val_acc", title="validation accuracy of every trial")
plt.tight_layout()
'''),
    md("## Which hyperparameter mattered?"),
    code('''
importances = optuna.importance.get_param_importances(study)
print({k: round(v, 3) for k, v in importances.items()})
viz.plot_param_importances(study);
'''),
    md("""
## The HTML report

`bnn-tune report RUN_DIR` (or `bnn_tune.search.report.write_report`) turns the run directory into one
self-contained HTML page: ranking table, flip-rate and accuracy curves, pruned vs completed, importance,
and the kernel benchmark when the directory holds a `bench.json` (see notebook 04). The study can also
be browsed live with `optuna-dashboard sqlite:///<RUN>/study.db`.
"""),
    code('''
from bnn_tune.search.report import write_report
path = write_report(RUN)
print(path, f"{path.stat().st_size / 1e3:.0f} kB")
'''),
]

# ------------------------------------------------------------------------------------------ 02
NB02 = [
    md("""
# 02 - Ray Tune: `bnn_tune.trainable` with ASHA, the flip-rate stopper and OptunaSearch

`bnn_tune.trainable(config)` is a Ray Tune function trainable: it trains one configuration, reports
`val_acc`, `log_flip_rate`, per-layer flip rates... every epoch with `ray.tune.report`, checkpoints every
epoch and resumes from `tune.get_checkpoint()` (so PBT and fault tolerance work).

Here:

* **search algorithm**: `OptunaSearch` (TPE) over the same define-by-run space the Optuna examples use
  (`bnn_tune.search_spaces.bop.suggest`);
* **scheduler**: ASHA stops poorly ranked trials early at rungs 1, 2, 4... epochs;
* **stopper**: `bnn_tune.plugins.ray.FlipRateStopper` stops trials whose flip rate collapsed (never the best one).

Small settings (8 trials x at most 4 epochs, 2 at a time): about a minute on a laptop CPU.
"""),
    code(SETUP),
    code('''
import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

import bnn_tune
from bnn_tune.plugins.ray import FlipRateStopper
from bnn_tune.search_spaces import bop

# Local runtime with 2 CPUs. On a cluster, start Ray there (`ray start --head` on one node,
# `ray start --address=HEAD_IP:6379` on the others) and connect instead:
#     ray.init(address="auto")                    # from a node of the cluster
#     ray.init(address="ray://HEAD_IP:10001")     # from outside, through Ray Client
# Trials are then spread over every node; give `storage_path` a directory all nodes share
# (NFS, or "s3://bucket/prefix") so checkpoints survive a node failure.
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
'''),
    code('''
EPOCHS = 4
STORAGE = tempfile.mkdtemp(prefix="bnn_tune_nb02_")        # must be an absolute path
analysis = tune.run(
    bnn_tune.trainable,                                       # or tune.with_resources(bnn_tune.trainable, {"gpu": 1})
    config={"dataset": "digits", "model": "mlp", "width": 0.5, "epochs": EPOCHS},   # fixed keys
    search_alg=OptunaSearch(space=bop.suggest, metric="val_acc", mode="max", seed=0),
    scheduler=ASHAScheduler(max_t=EPOCHS, grace_period=1, reduction_factor=2),
    stop=FlipRateStopper(metric="val_acc", mode="max", n_warmup_steps=1, patience=2),
    metric="val_acc", mode="max",
    num_samples=8, max_concurrent_trials=2,                  # a searcher needs a concurrency limit
    storage_path=STORAGE, name="bop_digits", verbose=0,
)
best = analysis.best_trial
print("best config:", {k: analysis.best_config[k] for k in ("gamma", "threshold", "gamma_schedule", "lr")})
print(f"best val_acc={best.last_result['val_acc']:.4f} after {best.last_result['training_iteration']} epochs")
'''),
    code('''
df = analysis.results_df
cols = ["val_acc", "log_flip_rate", "training_iteration", "config/gamma", "config/threshold", "config/lr"]
df[cols].sort_values("val_acc", ascending=False)
'''),
    md("""
Each trial's per-epoch results (`analysis.trial_dataframes`). ASHA cut the short curves at a rung; a
trial stopped by the flip-rate rule carries a `stop_reason` in its last result.
"""),
    code('''
fig, axes = plt.subplots(1, 2, figsize=(13, 4))
for d in analysis.trial_dataframes.values():
    label = str(d["trial_id"].iloc[0])
    axes[0].plot(d["training_iteration"], d["val_acc"], marker="o", label=label)
    axes[1].plot(d["training_iteration"], d["log_flip_rate"], marker="o", label=label)
axes[0].set(xlabel="epoch", ylabel="val_acc", title="validation accuracy")
axes[1].set(xlabel="epoch", ylabel="log flip rate", title="flip rate (floor -9 = frozen)")
axes[1].axhline(-9, color="0.5", ls=":")
axes[0].legend(fontsize=7)
plt.tight_layout()
stopped = {t.trial_id: t.last_result.get("stop_reason") for t in analysis.trials if t.last_result.get("stop_reason")}
print("stopped by the flip-rate rule:", stopped or "none")
'''),
    md("""
The experiment directory is plain files (`params.json`, `result.json`, `checkpoint_*/checkpoint.pt`):
`bnn-tune report` reads it without Ray, and `bnn-tune export` (notebook 04) picks the best trial's
checkpoint from it.
"""),
    code('''
from bnn_tune.search.report import write_report
print(write_report(STORAGE))
ray.shutdown()
'''),
]

# ------------------------------------------------------------------------------------------ 03
NB03 = [
    md("""
# 03 - Magnitude hyperparameters, shown with real runs

The hyperparameters of a latent-weight BNN optimizer that act on *magnitudes* (learning rate, initial
weight scale, weight decay, clipping) do not do what they do in a real-valued network: only the signs
reach the forward pass. bnn-tune's search spaces are built on four observations, each illustrated below
on digits with small runs:

1. **Bop's gamma and tau control the flip rate** (Helwegen et al. 2019, Fig. 1).
2. **Theorem 1**: without clipping and with a magnitude-independent update (Adam), scaling the learning
   rate and the initial latent weights by the same `C` gives identical binary weights, so they are one
   search dimension, not two.
3. **BNEW**: the poster (Paren & Poudel) reports that the optimal `beta` depends on the training length
   `T`; bnn-tune searches `beta * T` (the reference's `--reg`), whose range does not move with `T`.
   Whether its optimum transfers across `T` is not settled at this scale (BENCHMARKS.md section 3).
4. **Gradient filters** (Quist et al., ICLR 2023): latent SGD with momentum and weight decay *is* a
   second-order filter of the gradient; the filter order changes how the flip rate behaves.

About a minute and a half on a laptop CPU.
"""),
    code(SETUP),
    code('''
import math
import numpy as np
import torch
import bnn_tune
from bnn_tune.data import load_dataset
from bnn_tune.nn import binarize, binary_parameters

DATA = load_dataset("digits")          # loaded once, shared by every run below
BASE = {"dataset": "digits", "model": "mlp", "width": 0.25, "seed": 0}

def run(**cfg):
    return bnn_tune.fit({**BASE, **cfg}, data=DATA)
'''),
    md("""
## 1. Bop: gamma and tau vs flip rate (Fig. 1 of the Bop paper)

Left: `tau` fixed, `gamma` varied. Right: `gamma` fixed, `tau` varied. Higher `gamma` (a shorter
averaging window) and lower `tau` flip more weights; `gamma=1e-5` or `tau=1e-3` barely flips anything and
learns only through the real-valued parameters: the first and last layers and batch norm keep training
with Adam, so a network whose binary layers are frozen at their random initial signs still reaches
~85-90% on digits (random binary features), well below the runs whose binary weights move.
"""),
    code('''
EPOCHS = 4
gammas, taus = [1e-5, 1e-4, 1e-3, 1e-2], [0.0, 1e-6, 1e-4, 1e-3]
by_gamma = {g: run(optimizer="bop", gamma=g, threshold=1e-6, epochs=EPOCHS) for g in gammas}
by_tau = {t: run(optimizer="bop", gamma=1e-3, threshold=t, epochs=EPOCHS) for t in taus}

fig, axes = plt.subplots(2, 2, figsize=(12, 6.5), sharex=True)
for col, (name, runs) in enumerate((("gamma (tau=1e-6)", by_gamma), ("tau (gamma=1e-3)", by_tau))):
    for value, r in runs.items():
        ep = [m.epoch for m in r.history]
        axes[0, col].plot(ep, [m.log_flip_rate for m in r.history], marker="o", label=f"{value:g}")
        axes[1, col].plot(ep, [m.val_acc for m in r.history], marker="o", label=f"{value:g}")
    axes[0, col].set(title=f"varying {name}", ylabel="log flip rate")
    axes[1, col].set(xlabel="epoch", ylabel="val_acc")
    axes[0, col].legend(title=name.split()[0], fontsize=8)
plt.tight_layout()
'''),
    md("""
## 2. Theorem 1: learning rate and initial scale are one coordinate

Latent Adam, clip disabled (`clip_value=None`). Scaling `latent_lr` and `init_scale` by `C` scales every
latent weight by `C` at every step (Adam's step does not depend on the gradient's magnitude), so the
signs, hence the network, are the same. With the usual clip at 1 the invariance breaks as soon as
`C * w~` reaches the clip, and so it does without the clip once latents leave [-1, 1]: the
straight-through estimator `ste_sign` passes the gradient only where `|w~| <= 1`, a clip in disguise
(the theorem assumes a magnitude-independent pseudo-gradient). Inside that region `latent_lr` and
`init_scale` are one coordinate; this is why `bnn_tune.search_spaces.latent_adam` ties `init_scale` to
`latent_lr` instead of searching both.
"""),
    code('''
def signs(result):
    return torch.cat([binarize(p.detach()).flatten() for _, p in binary_parameters(result.model)])

lr0, scale0 = 1e-4, 1e-3
cfg = dict(optimizer="latent_adam", epochs=3, eps=1e-12)
ref = run(**cfg, latent_lr=lr0, init_scale=scale0, clip_value=None)
print(f"{'C':>6} {'clip':>5} {'same signs':>11} {'val_acc':>8} {'ref val_acc':>11}")
for C in (10.0, 100.0, 1000.0):
    for clip in (None, 1.0):
        r = run(**cfg, latent_lr=C * lr0, init_scale=C * scale0, clip_value=clip)
        same = (signs(r) == signs(ref)).float().mean().item()
        print(f"{C:6g} {str(clip):>5} {same:11.4f} {r.history[-1].val_acc:8.4f} {ref.history[-1].val_acc:11.4f}")
'''),
    md("""
## 3. BNEW: the push `beta_T`, and why it is searched instead of `beta`

BNEW in the authors' form (Alasdair-P/bnew) trains relaxed weights clipped to [-1, 1]. Phase 1, the first
`t_start` = 17% of the steps, is Adam on them (step size decaying to 0). Phase 2, the `T` steps from
`t_start` to `t_lock` (98% of the run), starts a fresh Adam and, before each of its steps, pushes the
weights to the corners: `w <- clamp((1 + 2 reg_t) w, -1, 1)` with `reg_t = beta (s + 1)` growing
linearly (`s` counts the phase-2 steps). At `t_lock` the weights are projected onto {-1, +1} and frozen; after it only the
real-valued layers train. `reg` at the lock is `beta * T`, the reference's own `--reg`, and bnn-tune
searches it as `beta_T` (log [1e-6, 1]; the optimizer derives `beta = beta_T / T`). The poster reports
that the best `beta` depends on `T`; a fixed `beta_T` range covers the same pushes at every run length,
where a fixed `beta` range does not.

Below, a `beta_T` grid inside the space at two run lengths, `T` from the optimizer's own phase rule.
Left: final `val_acc` (the sign network, which BNEW is validated on) against `beta_T`. Middle: the same
runs against the per-step `beta` they used; the two grids are shifted by the ratio of the `T`s. Right:
per epoch, `val_acc` (solid) beside `val_acc_relaxed` (dashed, the clipped real weights) for the weakest
and the strongest push: a strong push drives the weights to the corners early, so the two coincide long
before the lock; a weak one leaves the gap until the projection.

What the figure does **not** show is that `beta * T` transfers. On digits, one seed, the final
accuracies across the grid differ by 2-4 pp (one validation image is 0.35 pp) with no pattern shared by
the two lengths; with one seed that is evidence neither way (seeds of one setting differ by up to
2.4 pp in BENCHMARKS.md).
BENCHMARKS.md section 3 (3 seeds, `T` up to 810 steps, digits and mnist1d) finds no optimum that moves
with `T` in any coordinate (digits flat; mnist1d a plateau at small `beta` and a decline past
`beta` ~1e-4..1e-3 at every `T`), so at this scale the transfer of `beta * T` is neither shown nor
refuted. `beta_T` is searched because it is the reference's coordinate and its range does not depend on
the run length.
"""),
    code('''
import bnn_tune.optim as bopt
from bnn_tune.optim._bnew import bnew_phase_steps   # the phase rule BNEW itself uses
hp = bopt.get("bnew").hyperparameters
print("BNEW hyperparameters:", dict(hp))
beta_Ts = [1e-4, 1e-3, 1e-2, 1e-1, 1.0]              # inside bnn_tune.search_spaces.bnew.BETA_T = log [1e-6, 1]
lengths = {"3 epochs": 3, "6 epochs": 6}
res = {name: [run(optimizer="bnew", beta_T=bt, epochs=ep) for bt in beta_Ts] for name, ep in lengths.items()}

fig, axes = plt.subplots(1, 3, figsize=(16, 3.8))
for name, ep in lengths.items():
    total = ep * math.ceil(len(DATA.y_train) / res[name][0].config.batch_size)   # optimizer steps of the run
    start, lock = bnew_phase_steps(total, hp["t_start"], hp["t_lock"])
    T = lock - start                                               # phase-2 steps
    acc = [r.history[-1].val_acc for r in res[name]]
    print(f"{name}: {total} steps, phase 2 = steps {start}..{lock - 1}, T = {T}; final val_acc",
          " ".join(f"{a:.3f}" for a in acc))
    axes[0].semilogx(beta_Ts, acc, marker="o", label=f"{name} (T={T})")
    axes[1].semilogx([bt / T for bt in beta_Ts], acc, marker="o", label=f"{name} (T={T})")
for k in (0, -1):                                                  # weakest and strongest push
    h = res["6 epochs"][k].history
    ep = [m.epoch for m in h]
    c = axes[2].plot(ep, [m.val_acc for m in h], marker="o", label=f"beta_T={beta_Ts[k]:g}: val_acc")[0].get_color()
    axes[2].plot(ep, [m.val_acc_relaxed for m in h], ls="--", color=c, label=f"beta_T={beta_Ts[k]:g}: val_acc_relaxed")
axes[0].set(xlabel="beta_T = beta * T (searched)", ylabel="final val_acc (sign network)", title="vs beta_T")
axes[1].set(xlabel="beta = beta_T / T (per step)", title="the same runs vs beta")
axes[2].set(xlabel="epoch", ylabel="val_acc", title="6 epochs: sign vs relaxed network")
for ax in axes:
    ax.legend(fontsize=8)
plt.tight_layout()
'''),
    md("""
## 4. Gradient filters: order 1 vs order 2

The `filter` optimizer flips a weight when the filtered gradient agrees with it: order 1 is Bop's EMA
`m`; order 2 adds a second EMA `i <- (1 - alpha) i + alpha m` (the "inertia", the role a latent weight
plays). First the equivalence the paper proves: latent SGD with EMA momentum and decoupled weight decay
`w~ <- (1 - eta*lambda) w~ - eta*m` keeps `i = -lambda * w~` exactly, so `alpha = eta * lambda` and
`sign(w~) = -sign(i)` at every step. Then real runs of both orders.
"""),
    code('''
torch.manual_seed(0)
gamma, eta, lam = 0.1, 0.01, 0.3
alpha = eta * lam
w_latent = torch.randn(10_000) * 0.1
m_sgd = torch.zeros_like(w_latent)
i = -lam * w_latent.clone()           # the filter's state started where the latent weights are
m_f = torch.zeros_like(w_latent)
agree = []
for step in range(300):
    g = torch.randn_like(w_latent) + 0.3 * torch.sign(w_latent)   # a gradient stream with some signal
    m_sgd = (1 - gamma) * m_sgd + gamma * g
    w_latent = (1 - eta * lam) * w_latent - eta * m_sgd            # latent SGD, decoupled weight decay
    m_f = (1 - gamma) * m_f + gamma * g
    i = (1 - alpha) * i + alpha * m_f                              # order-2 filter
    agree.append((torch.sign(w_latent) == -torch.sign(i)).float().mean().item())
print(f"sign(w~) == -sign(i) on {min(agree):.6f} of the weights at every one of {len(agree)} steps;",
      f"max |i + lambda*w~| = {(i + lam * w_latent).abs().max():.2e}")
'''),
    code('''
spec = bopt.get("filter")
print("filter hyperparameters:", dict(spec.hyperparameters))
runs = {
    "order 1 (gamma=1e-3, = Bop without threshold)": run(optimizer="filter", order=1, gamma=1e-3, epochs=EPOCHS),
    "order 2 (gamma=1e-1, alpha=1e-3)": run(optimizer="filter", order=2, gamma=1e-1, alpha=1e-3, epochs=EPOCHS),
    "order 2 (gamma=1e-1, alpha=1e-2)": run(optimizer="filter", order=2, gamma=1e-1, alpha=1e-2, epochs=EPOCHS),
}
fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
for name, r in runs.items():
    ep = [m.epoch for m in r.history]
    axes[0].plot(ep, [m.log_flip_rate for m in r.history], marker="o", label=name)
    axes[1].plot(ep, [m.val_acc for m in r.history], marker="o", label=name)
axes[0].set(xlabel="epoch", ylabel="log flip rate")
axes[1].set(xlabel="epoch", ylabel="val_acc")
axes[0].legend(fontsize=8)
plt.tight_layout()
'''),
]

# ------------------------------------------------------------------------------------------ 04
NB04 = [
    md("""
# 04 - Export the best trial, load the packed model, benchmark the kernels

`bnn_tune.export.export_best(source, out_dir)` takes a finished search (an Optuna study or storage URL,
or a Ray experiment directory / `ResultGrid`), picks the best trial, loads its checkpoint (or retrains
its config when there is none) and writes

* `config.json`: the flat config (`bnn_tune.fit` reads it back),
* `model.bnn.safetensors`: the **packed** model: binary weights as bits in `uint32` words, batch norm
  folded into integer thresholds, a JSON header (format version, shapes, checksum); no pickle,
* `bench.json` / `bench.png`: packed kernels vs the float model, measured on this machine,
* `export.json`: provenance and the test accuracy of the PyTorch and the packed model.

Small settings: a 4-trial search of latent-Adam on digits, then the export (about a minute).
"""),
    code(SETUP),
    code('''
import json
import numpy as np
import optuna
import torch
import bnn_tune
from bnn_tune.export import export_best, load_packed

optuna.logging.set_verbosity(optuna.logging.WARNING)
RUN = pathlib.Path(tempfile.mkdtemp(prefix="bnn_tune_nb04_"))
study = optuna.create_study(study_name="export-demo", storage=f"sqlite:///{RUN / 'study.db'}",
                            direction="maximize", sampler=optuna.samplers.TPESampler(seed=1))
BASE = {"dataset": "digits", "model": "mlp", "width": 0.5, "epochs": 4}
# artifact_dir: every completed trial saves its final checkpoint (what export_best loads)
study.optimize(bnn_tune.objective("latent_adam", base_config=BASE, artifact_dir=RUN), n_trials=4)
print(f"best trial {study.best_trial.number}: val_acc={study.best_value:.4f}")
'''),
    code('''
summary = export_best(study, RUN / "export")          # same as: bnn-tune export sqlite:///.../study.db --study export-demo --out ...
print(json.dumps({k: summary[k] for k in ("trial", "weights", "torch_test_acc", "packed_test_acc", "agreement",
                                            "weight_bytes")}, indent=1))
print(sorted(p.name for p in (RUN / "export").iterdir()))
'''),
    md("""
## Load the packed model and check its predictions

`load_packed` verifies the header and checksum and never unpickles anything. The packed model runs the
binary layers as XNOR/popcount on the packed words; its predictions must match the PyTorch model the
checkpoint holds. The file also carries the input transform (the training split's per-feature mean and
std): `predict` takes the raw arrays a user has (here scikit-learn's digits `X`, values 0..16), and
`preprocessed=True` takes inputs already normalized like the training data.
"""),
    code('''
packed = load_packed(RUN / "export" / "model.bnn.safetensors")
print(packed)
trainer = bnn_tune.Trainer(json.loads((RUN / "export" / "config.json").read_text()))
state = torch.load(study.best_trial.user_attrs["bnn_tune:checkpoint"], map_location="cpu", weights_only=True)
trainer.model.load_state_dict(state["model"])
trainer.model.eval()
x, y = trainer.data.x_test, trainer.data.y_test
with torch.no_grad():
    torch_pred = trainer.model(x).argmax(1).numpy()
packed_pred = packed.predict(x, preprocessed=True)
print(f"test accuracy: torch {np.mean(torch_pred == y.numpy()):.4f}, packed {np.mean(packed_pred == y.numpy()):.4f}; "
      f"identical predictions on {np.mean(packed_pred == torch_pred):.2%} of {len(y)} test images")
print("weight bytes:", packed.weight_bytes(), "vs float32:", sum(p.numel() * 4 for p in trainer.model.parameters()))
from sklearn.datasets import load_digits
X_raw, y_raw = load_digits(return_X_y=True)          # raw pixels 0..16, shape (1797, 64)
print(f"packed accuracy on raw sklearn digits X: {np.mean(packed.predict(X_raw) == y_raw):.4f}")
'''),
    md("""
## Benchmark

`benchmark_model` times every binary layer and the whole model, packed vs the float twin, at batch 1
(latency) and 64 (throughput); medians over repeats, the baseline measured in the same run. On a GPU
use `device="cuda"` (CUDA kernels vs cuBLAS fp16/bf16) or `bnn-tune bench --device cuda`. This CPU
path is numpy popcount code: on tiny MLP layers it does not beat PyTorch's fp32 GEMM; the numbers below
are what this machine measures, not a claim.
"""),
    code('''
from bnn_tune.export import benchmark_model, format_table
from rich.console import Console

res = benchmark_model("mlp", (1, 8, 8), 10, width=0.5, quick=True, packed=packed, include_large_layer=True,
                      batch_sizes=(1, 64))
Console(width=140).print(format_table(res))
'''),
    code('''
rows = res["rows"]
fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
for ax, bs in zip(axes, (1, 64)):
    sel = [r for r in rows if r["batch"] == bs]
    names = [f"{r['name']}\\n[{r['scope']}]" for r in sel]
    ax.bar(names, [r["baseline_ms"]["fp32"] for r in sel], width=0.4, align="edge", label="torch fp32")
    ax.bar(names, [r["packed_ms"] for r in sel], width=-0.4, align="edge", label="packed 1-bit")
    ax.set(yscale="log", ylabel="ms (median)", title=f"batch {bs}")
    ax.tick_params(axis="x", labelsize=7)
    ax.legend()
fig.tight_layout()
display(fig)   # explicit: export_best's bench.png drawing switched pyplot to the Agg backend
plt.close(fig)
'''),
    md("""
The export directory also feeds the report: `bnn-tune report RUN` puts the benchmark table and plot
next to the search's curves.
"""),
    code('''
from bnn_tune.search.report import write_report
print(write_report(RUN))
'''),
]

NOTEBOOKS = {
    "01_quickstart.ipynb": NB01,
    "02_ray_tune.ipynb": NB02,
    "03_magnitude_hyperparameters.ipynb": NB03,
    "04_export_and_kernels.ipynb": NB04,
}


def build(out_dir: Path = HERE) -> list[Path]:
    paths = []
    for name, cells in NOTEBOOKS.items():
        for k, cell in enumerate(cells):
            cell["id"] = f"{Path(name).stem[:2]}-{k:02d}"  # stable ids: rebuilding gives no diff
        nb = new_notebook(cells=cells, metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
        })
        nbformat.validate(nb)
        path = out_dir / name
        nbformat.write(nb, path)
        paths.append(path)
    return paths


if __name__ == "__main__":
    for p in build(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE):
        print("wrote", p)
