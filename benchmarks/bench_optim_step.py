"""Optimizer step time (Bop vs Adam) on BinaryNet's binary weights, and optimizer state per weight.

Goal (issue 3): one Bop step <= 0.7x one ``torch.optim.Adam(foreach=True)`` step on the same
parameters. Only ``optimizer.step()`` is timed (gradients are fixed random tensors), the variants are
interleaved round by round so machine noise hits all of them alike, and the medians are compared in
the same run. State memory is measured after one step: bytes of every tensor in ``optimizer.state``
divided by the number of binary weights.

    python benchmarks/bench_optim_step.py [--quick] [--device cpu|cuda|auto] [--width 1.0]

Writes ``benchmarks/results/optim_step[_quick]_<device>.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from bnn_tune import optim
from bnn_tune.nn import binary_parameters, build_model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _binarynet_weights(width: float, device: torch.device) -> list[torch.Tensor]:
    model = build_model("binarynet", (3, 32, 32), 10, width=width)
    return [p.detach().to(device) for _, p in binary_parameters(model)]


def _make(name: str, params: list[torch.nn.Parameter], foreach: bool) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=1e-3, foreach=foreach)
    if name == "bop":
        return optim.Bop(params, gamma=1e-3, threshold=1e-6, foreach=foreach)
    if name == "bop2":
        return optim.Bop2ndOrder(params, foreach=foreach)
    if name == "filter":
        return optim.GradientFilter(params, order=2, foreach=foreach)
    if name == "filter1":
        return optim.GradientFilter(params, order=1, foreach=foreach)
    if name == "latent_adam":
        return optim.LatentAdam(params, lr=1e-3, foreach=foreach)
    if name == "bmd":
        return optim.BMD(params, lr=1e-3, total_steps=10_000, foreach=foreach)
    if name == "bnew":
        return optim.BNEW(params, lr=1e-3, beta_T=1.0, total_steps=10_000, foreach=foreach)
    raise ValueError(name)


def _setup(name: str, weights: list[torch.Tensor], foreach: bool, seed: int = 0):
    gen = torch.Generator(device=weights[0].device).manual_seed(seed)
    params = []
    for w in weights:
        p = torch.nn.Parameter(torch.where(w >= 0, 1.0, -1.0).to(w) if name in ("bop", "bop2", "filter", "filter1")
                               else w.clone())
        p.grad = torch.randn(p.shape, generator=gen, device=p.device) * 1e-3
        params.append(p)
    return params, _make(name, params, foreach)


def state_bytes_per_weight(opt: torch.optim.Optimizer, params: list[torch.Tensor]) -> float:
    n = sum(p.numel() for p in params)
    total = 0
    for st in opt.state.values():
        for v in st.values():
            if torch.is_tensor(v):
                total += v.numel() * v.element_size()
    return total / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="width 0.25 and few repeats (smoke run)")
    ap.add_argument("--device", default="auto", help="cpu, cuda or auto (GPU when visible)")
    ap.add_argument("--width", type=float, default=None, help="BinaryNet width (default 1.0; 0.25 with --quick)")
    ap.add_argument("--repeats", type=int, default=None, help="timed rounds (median is reported)")
    ap.add_argument("--steps", type=int, default=None, help="steps per timed round")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/optim_step[_quick]_<device>.json)")
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    width = args.width if args.width is not None else (0.25 if args.quick else 1.0)
    repeats = args.repeats or (5 if args.quick else 15)
    steps = args.steps or (3 if args.quick else (20 if device.type == "cuda" else 5))
    weights = _binarynet_weights(width, device)
    n_weights = sum(w.numel() for w in weights)

    # ---- step time: Bop vs Adam(foreach=True), plus Bop's single-tensor path, interleaved
    variants = [("adam", True), ("bop", True), ("bop", False)]
    setups = {v: _setup(v[0], weights, v[1]) for v in variants}
    for opt in (s[1] for s in setups.values()):
        for _ in range(2):  # warm-up (and lazy state allocation)
            opt.step()
    _sync(device)
    times: dict[tuple[str, bool], list[float]] = {v: [] for v in variants}
    for r in range(repeats):
        order = variants[r % len(variants):] + variants[: r % len(variants)]
        for v in order:
            opt = setups[v][1]
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(steps):
                opt.step()
            _sync(device)
            times[v].append((time.perf_counter() - t0) / steps)
    med = {f"{n}{'_foreach' if fe else '_single'}": statistics.median(ts) * 1e3 for (n, fe), ts in times.items()}
    # Bop's default path (foreach=None) is the multi-tensor one on CUDA and the single-tensor loop on
    # CPU, where torch's _foreach kernels are per-tensor loops that allocate more temporaries.
    default_key = "bop_foreach" if device.type == "cuda" else "bop_single"
    ratio = med[default_key] / med["adam_foreach"]
    del setups

    # ---- optimizer state per binary weight
    state = {}
    for name in ("adam", "bop", "bop2", "filter1", "filter", "latent_adam", "bmd", "bnew"):
        params, opt = _setup(name, weights, foreach=device.type == "cuda")
        opt.step()
        state[name] = state_bytes_per_weight(opt, params)
        del params, opt

    result = {
        "benchmark": "optim_step",
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "model": "binarynet",
        "input_shape": [3, 32, 32],
        "width": width,
        "binary_weights": n_weights,
        "binary_tensors": len(weights),
        "repeats": repeats,
        "steps_per_repeat": steps,
        "step_ms_median": med,
        "bop_default_path": default_key,
        "ratio_bop_over_adam": ratio,
        "ratio_bop_foreach_over_adam": med["bop_foreach"] / med["adam_foreach"],
        "ratio_bop_single_over_adam": med["bop_single"] / med["adam_foreach"],
        "goal_ratio": 0.7,
        "meets_goal": ratio <= 0.7,
        "state_bytes_per_weight": state,
    }
    out = Path(args.out or f"benchmarks/results/optim_step{'_quick' if args.quick else ''}_{device.type}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")

    print(f"BinaryNet (width {width}) binary weights: {n_weights:,} in {len(weights)} tensors on {device} "
          f"({result['device_name']}, {result['threads']} threads); median of {repeats} x {steps} steps")
    print(f"{'optimizer':<28}{'step ms':>10}{'vs Adam':>10}")
    for key, label in (("adam_foreach", "torch.optim.Adam(foreach)"), ("bop_foreach", "Bop (foreach)"),
                       ("bop_single", "Bop (single-tensor)")):
        print(f"{label:<28}{med[key]:>10.3f}{med[key] / med['adam_foreach']:>9.2f}x")
    print(f"goal Bop <= 0.70x Adam (Bop's default path on {device.type}, {default_key}): "
          f"{'met' if result['meets_goal'] else 'NOT met'} ({ratio:.2f}x)")
    print(f"\n{'optimizer':<14}{'state bytes / weight':>22}{'floats / weight':>17}")
    for name, b in state.items():
        print(f"{name:<14}{b:>22.2f}{b / 4:>17.2f}")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
