"""The TensorFlow side of the LCE export: runs in the LCE environment (``make lce-env``), never in bnn-tune's.

``python _lce_worker.py serve`` reads one JSON request per line on stdin and answers one JSON line on stdout
(see :class:`bnn_tune.export._lce.LceWorker`):

* ``{"cmd": "versions"}`` -> the versions of tensorflow, tf-keras, larq, larq-compute-engine, numpy.
* ``{"cmd": "convert", "spec": DIR, "out": PATH, "batch_size": B}``: builds the ``tf.keras`` model of
  ``DIR/spec.json`` (layer specs written by ``bnn_tune.export._lce``) with the weights of ``DIR/weights.npz``,
  converts it with ``larq_compute_engine.convert_keras_model`` and writes the ``.tflite``; answers the op
  counts of the converted graph (``LceBconv2d``, ``FULLY_CONNECTED``, ...) and its size.
* ``{"cmd": "load", "model": PATH, "threads": T, "setting": "best" | "default"}``: an LCE interpreter (``best``:
  indirect BGEMM and XNNPACK; ``default``: LCE's defaults); answers its id.
* ``{"cmd": "predict", "id": I, "input": X.npy, "output": Y.npy}``: logits of every row of ``X``, fed in
  chunks of the model's fixed batch size.
* ``{"cmd": "time", "id": I, "calls": N}``: milliseconds of ``N`` calls on the last predicted chunk.

It imports nothing of bnn-tune (that environment has no torch). Errors are answered as ``{"error": "..."}``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # larq needs Keras 2 (tf-keras) under TF 2.16
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {p: version(p) for p in ("tensorflow-cpu", "tf-keras", "larq", "larq-compute-engine", "numpy")}


def _build(spec_dir: str, batch_size: int) -> Any:
    import larq as lq
    import numpy as np
    import tensorflow as tf

    keras = tf.keras
    with open(os.path.join(spec_dir, "spec.json")) as f:
        spec = json.load(f)
    weights = np.load(os.path.join(spec_dir, "weights.npz"), allow_pickle=False)
    inp = keras.Input(shape=tuple(spec["input_shape"]), batch_size=batch_size)
    x = inp
    layers = []
    for i, ls in enumerate(spec["layers"]):
        cls = getattr(lq.layers, ls["class"], None) or getattr(keras.layers, ls["class"])
        layer = cls(**ls["config"], name=f"l{i}_{ls['class'].lower()}")
        x = layer(x)
        layers.append((layer, [weights[k] for k in ls["weights"]]))
    model = keras.Model(inp, x)
    for layer, ws in layers:
        if ws:
            want = [tuple(w.shape) for w in layer.get_weights()]
            got = [tuple(w.shape) for w in ws]
            if want != got:
                raise ValueError(f"layer {layer.name}: weights of shapes {got}, but the layer has {want}")
            layer.set_weights(ws)
    return model


def _op_counts(flatbuffer: bytes) -> dict[str, int]:
    from larq_compute_engine.mlir.python import tflite_schema as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(bytearray(flatbuffer), 0))
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    counts: dict[str, int] = {}
    for sub in model.subgraphs:
        for op in sub.operators or []:
            code = model.operatorCodes[op.opcodeIndex]
            name = code.customCode.decode() if isinstance(code.customCode, bytes) else code.customCode
            if not name:
                name = names.get(max(code.builtinCode, code.deprecatedBuiltinCode), str(code.builtinCode))
            counts[name] = counts.get(name, 0) + 1
    return counts


class _Server:
    def __init__(self) -> None:
        self.interpreters: dict[int, tuple[Any, int, Any]] = {}  # id -> (interpreter, batch, last chunk)

    def handle(self, msg: dict[str, Any]) -> dict[str, Any]:
        cmd = msg.get("cmd")
        if cmd == "versions":
            return {"versions": _versions()}
        if cmd == "convert":
            import larq_compute_engine as lce

            model = _build(msg["spec"], int(msg.get("batch_size", 1)))
            flatbuffer = lce.convert_keras_model(model)
            with open(msg["out"], "wb") as f:
                f.write(flatbuffer)
            return {"ops": _op_counts(flatbuffer), "bytes": len(flatbuffer)}
        if cmd == "load":
            from larq_compute_engine.tflite.python.interpreter import Interpreter

            with open(msg["model"], "rb") as f:
                flatbuffer = f.read()
            best = msg.get("setting", "best") == "best"
            interp = Interpreter(flatbuffer, num_threads=int(msg.get("threads", 1)), use_indirect_bgemm=best,
                                 use_xnnpack=best)
            handle = len(self.interpreters)
            self.interpreters[handle] = (interp, int(interp.input_shapes[0][0]), None)
            return {"id": handle, "input_shape": list(interp.input_shapes[0])}
        if cmd == "predict":
            import numpy as np

            interp, batch, _ = self.interpreters[int(msg["id"])]
            x = np.load(msg["input"], allow_pickle=False).astype(np.float32)
            outs, chunk = [], None
            for i in range(0, len(x), batch):
                chunk = x[i: i + batch]
                n = len(chunk)
                if n < batch:  # the model's batch is fixed: pad the last chunk
                    chunk = np.concatenate([chunk, np.zeros((batch - n, *x.shape[1:]), np.float32)])
                outs.append(interp.interpreter.predict([chunk])[0][:n])
            self.interpreters[int(msg["id"])] = (interp, batch, chunk)
            np.save(msg["output"], np.concatenate(outs) if outs else np.zeros((0,), np.float32))
            return {"ok": True}
        if cmd == "time":
            interp, _, chunk = self.interpreters[int(msg["id"])]
            if chunk is None:
                raise ValueError("predict something first: time reuses the last input")
            run = interp.interpreter.predict
            ms = []
            for _ in range(int(msg["calls"])):
                t0 = time.perf_counter()
                run([chunk])
                ms.append((time.perf_counter() - t0) * 1e3)
            return {"ms": ms}
        raise ValueError(f"unknown command {cmd!r}")


def main(argv: list[str]) -> int:
    if argv[1:] != ["serve"]:
        print("usage: _lce_worker.py serve   (started by bnn_tune.export._lce.LceWorker)", file=sys.stderr)
        return 2
    answers = os.fdopen(os.dup(1), "w")  # the protocol's channel; anything else printed goes to stderr
    os.dup2(2, 1)
    server = _Server()
    for line in sys.stdin:
        try:
            out = server.handle(json.loads(line))
        except Exception as exc:  # answered, not raised: the caller turns it into its own error
            out = {"error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
        answers.write(json.dumps(out) + "\n")
        answers.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
