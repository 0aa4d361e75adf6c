"""``bnn-tune bench [--device cpu|cuda] [--model NAME] [--quick]``: packed kernels vs the float twin."""

from __future__ import annotations

import argparse
import json
import os

from ..cli import make_console, register_command


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in text.replace("x", ",").split(",") if s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a shape like 3,32,32, but got {text!r}") from None
    if not shape or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected a shape like 3,32,32, but got {text!r}")
    return shape


def _check_writable(folder: str) -> None:
    """Raise ``ValueError`` unless ``folder`` is, or can be created as, a writable folder (nothing is created)."""
    path = os.path.abspath(folder)
    probe = path
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe) or not os.access(probe, os.W_OK | os.X_OK) or (probe == path and not os.path.isdir(path)):
        raise ValueError(f"Cannot write to the output folder {folder!r} ({probe!r} is not a writable folder); "
                         "choose a folder you can write to (--out).")


def _add(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--model", default="vgg_small",
                   help="zoo model with a packed form (mlp, binarynet, vgg_small, birealnet18)")
    p.add_argument("--packed", default=None, help="benchmark this packed model file instead of a random zoo model")
    p.add_argument("--input-shape", type=_shape, default=None, dest="input_shape",
                   help="input shape, e.g. 3,32,32 (default: 3,32,32 for images, 1,8,8 for mlp)")
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--num-classes", type=int, default=10, dest="num_classes")
    p.add_argument("--batch", type=int, action="append", default=None, dest="batch_sizes",
                   help="batch size (repeatable; default 1 and 256)")
    p.add_argument("--no-large-layer", action="store_true", help="skip the 4096x4096 layer rows")
    p.add_argument("--quick", action="store_true", help="fewer repeats")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for both sides (default: torch's setting; 1 is stable on shared machines)")
    p.add_argument("--out", default=".", help="directory for bench.json and bench.png")


def _run(args: argparse.Namespace) -> int:
    from ._model import benchmark_model, format_table, plot_results

    console = make_console()
    packed = None
    model, shape, width, depth, ncls = args.model, args.input_shape, args.width, args.depth, args.num_classes
    if args.packed:
        from ..export._model import load_packed

        packed = load_packed(args.packed)
        info = packed.header.get("model", {})
        model = info.get("name", model)
        shape = shape or tuple(info.get("input_shape") or ())
        width = info.get("width", width)
        depth = info.get("depth", depth)
        ncls = info.get("num_classes") or ncls
    if not shape:
        shape = (1, 8, 8) if model == "mlp" else (3, 32, 32)
    _check_writable(args.out)  # an unwritable --out fails before the benchmark runs; it is created after
    # user errors (no GPU for --device cuda, bad shapes) are answered by bnn_tune.cli.main
    res = benchmark_model(model, tuple(shape), ncls, width=width, depth=depth, device=args.device,
                          quick=args.quick, packed=packed, batch_sizes=tuple(args.batch_sizes or (1, 256)),
                          include_large_layer=not args.no_large_layer, threads=args.threads)
    console.print(format_table(res))
    if args.device == "cuda":
        from ._cuda import summary

        print(summary(res))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "bench.json"), "w") as f:
        json.dump(res, f, indent=2)
    plot_results(res, os.path.join(args.out, "bench.png"))
    console.print(f"wrote {os.path.join(args.out, 'bench.json')} and bench.png")
    return 0


register_command("bench", _add, _run)
