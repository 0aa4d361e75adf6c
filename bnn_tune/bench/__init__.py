"""Whole-model and whole-step benchmarks (above ``train`` and ``export`` in the layer order).

``bnn_tune.bench.train_step``: the cost of one training step of a binary network against its
real-valued twin, its split into forward/backward/optimizer/flip counting, and trial start-up time.
"""
