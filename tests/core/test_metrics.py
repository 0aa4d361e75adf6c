import math

import pytest
import torch

from bnn_tune.metrics import LOG_FLIP_RATE_EPS, FlipCounter, accuracy, log_flip_rate
from bnn_tune.nn import BinaryLinear


def test_hand_stepped_flip_counter():
    a = torch.nn.Parameter(torch.tensor([0.5, -0.5, 0.1, -0.1]))
    b = torch.nn.Parameter(torch.tensor([[1.0, 2.0], [-1.0, 0.0]]))
    opt = torch.optim.SGD([a, b], lr=1.0)
    counter = FlipCounter([("a", a), ("layer.weight", b)]).attach(opt)
    # step 1: a -> [-0.5, -0.5, 0.1, 0.9] (2 flips); b -> [[1, 2], [-1, -0.5]] (0 -> -0.5 is a flip)
    a.grad = torch.tensor([1.0, 0.0, 0.0, -1.0])
    b.grad = torch.tensor([[0.0, 0.0], [0.0, 0.5]])
    opt.step()
    # step 2: a -> [-0.5, -0.5, -0.9, 0.9] (1 flip); b unchanged
    a.grad = torch.tensor([0.0, 0.0, 1.0, 0.0])
    b.grad = torch.zeros(2, 2)
    opt.step()
    s = counter.summary()
    assert s["flips"] == 4 and s["steps"] == 2
    assert s["flip_rate"] == pytest.approx(4 / (8 * 2))
    assert s["layers"] == {"a": pytest.approx(3 / 8), "layer": pytest.approx(1 / (4 * 2))}
    assert s["log_flip_rate"] == pytest.approx(math.log(0.25 + math.exp(-9)))
    counter.reset()
    assert counter.summary()["flip_rate"] == 0.0
    assert counter.summary()["log_flip_rate"] == pytest.approx(-9.0)


def test_counter_on_model_uses_only_binary_parameters_and_detaches():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), BinaryLinear(4, 2))
    counter = FlipCounter(model)
    assert counter.names == ["1"] and counter.sizes == [8]
    opt = torch.optim.SGD(model.parameters(), lr=10.0)
    counter.attach(opt)
    model(torch.randn(5, 3)).sum().backward()
    opt.step()
    counter.detach()
    opt.step()
    assert counter.steps == 1


def test_counter_requires_binary_parameters():
    with pytest.raises(ValueError, match="no binary parameters"):
        FlipCounter(torch.nn.Linear(2, 2))


def test_log_flip_rate_and_accuracy():
    assert LOG_FLIP_RATE_EPS == pytest.approx(math.exp(-9))
    assert log_flip_rate(0.0) == pytest.approx(-9.0)
    assert accuracy(torch.tensor([[0.0, 1.0], [2.0, 1.0]]), torch.tensor([1, 1])) == 0.5


def test_changes_between_steps_are_not_counted_as_flips():
    w = torch.nn.Parameter(torch.tensor([1.0, -1.0]))
    opt = torch.optim.SGD([w], lr=1.0)
    counter = FlipCounter([("w", w)]).attach(opt)
    w.grad = torch.zeros(2)
    opt.step()
    with torch.no_grad():
        w.neg_()  # e.g. a checkpoint load: not an optimizer flip
    opt.step()
    assert counter.summary()["flips"] == 0
    w.grad = torch.tensor([-2.0, 0.0])  # w[0]: -1 -> +1
    opt.step()
    assert counter.summary()["flips"] == 1


def _sgd_flips(packed: bool) -> dict:
    g = torch.Generator().manual_seed(0)
    ws = [torch.nn.Parameter(torch.randn(n, generator=g)) for n in (130, 64, 7)]
    ws.append(torch.nn.Parameter(torch.randn(33, generator=g, dtype=torch.float64)))  # always the bool path
    opt = torch.optim.SGD(ws, lr=1.0)
    counter = FlipCounter([(f"w{i}", w) for i, w in enumerate(ws)], packed=packed).attach(opt)
    assert counter._packed == [packed] * 3 + [False]
    for step in range(6):
        for w in ws:
            w.grad = torch.randn(w.shape, generator=g, dtype=w.dtype) * 0.7
            if step == 3:
                w.grad[0] = w.detach()[0]  # lands on exactly +0.0 (counts as +)
        opt.step()
        if step == 2:
            with torch.no_grad():
                ws[0][5] = float("nan")  # outside the optimizer: retaken before the next step, NaN counts as -
    return counter.summary()


def test_packed_sign_path_counts_what_the_bool_path_counts():
    from bnn_tune.kernels._signs import sign_kernel_applies

    if not sign_kernel_applies(torch.zeros(1)):
        pytest.skip("no C compiler: only the bool path exists")
    packed = _sgd_flips(packed=True)
    plain = _sgd_flips(packed=False)
    assert packed == plain and packed["flips"] > 0


@pytest.mark.parametrize("packed", [True, False])
def test_sub_epoch_rates_see_the_flips_of_either_path(packed):
    from bnn_tune.metrics import SubEpochFlipRates

    w = torch.nn.Parameter(torch.tensor([0.5, -0.5, 0.25, -0.25]))
    opt = torch.optim.SGD([w], lr=1.0)
    counter = FlipCounter([("w", w)], packed=packed).attach(opt)
    sub = SubEpochFlipRates(counter, steps_per_epoch=2, points=2).attach(opt)
    for grad in ([1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 1.0, 0.0]):  # one flip, then two
        w.grad = torch.tensor(grad)
        opt.step()
    assert sub.rates == [0.25, 0.5]
    assert counter.layer_flips() == [3]


def test_a_parameter_that_changes_dtype_moves_to_the_bool_path():
    w = torch.nn.Parameter(torch.tensor([1.0, -1.0, 0.5]))
    opt = torch.optim.SGD([w], lr=1.0)
    counter = FlipCounter([("w", w)]).attach(opt)
    w.data = w.data.double()
    w.grad = torch.tensor([2.0, -2.0, 0.0], dtype=torch.float64)  # w[0], w[1] flip
    opt.step()
    assert counter.summary()["flips"] == 2


# ----------------------------------------------------------------------------- issue 26 (tools/mutate.py)
@pytest.mark.parametrize("packed", [True, False])
def test_zero_counts_as_positive_on_either_path(packed):
    # sign(0) = +1: +0.5 -> 0 is no flip, -0.5 -> 0 is one, 0 -> -0.5 is one, 0 -> +0.5 is none
    w = torch.nn.Parameter(torch.tensor([0.5, -0.5, 0.0, 0.0]))
    opt = torch.optim.SGD([w], lr=1.0)
    counter = FlipCounter([("w", w)], packed=packed).attach(opt)
    w.grad = torch.tensor([0.5, -0.5, 0.5, -0.5])
    opt.step()
    assert w.tolist() == [0.0, 0.0, -0.5, 0.5]
    assert counter.layer_flips() == [2]


@pytest.mark.parametrize("packed", [True, False])
def test_sub_epoch_windows_of_unequal_length_over_two_epochs(packed):
    """steps_per_epoch=5, points=2: windows end at steps round(2.5)=2 and 5, so the rates divide by 2 and by 3
    steps; the counter's reset starts the next epoch's windows; on_point sees every new rate."""
    from bnn_tune.metrics import SubEpochFlipRates

    w = torch.nn.Parameter(torch.tensor([1.0, -1.0, 1.0, -1.0]))
    opt = torch.optim.SGD([w], lr=1.0)
    counter = FlipCounter([("w", w)], packed=packed).attach(opt)
    seen = []
    sub = SubEpochFlipRates(counter, steps_per_epoch=5, points=2, on_point=lambda r: seen.append(list(r))).attach(opt)
    assert sub.bounds == {2, 5}

    def epoch(flips_per_step):
        counter.reset()
        for k in flips_per_step:  # flip the first k weights
            w.grad = torch.zeros(4)
            w.grad[:k] = 2.0 * w.detach()[:k]
            opt.step()

    epoch([1, 0, 2, 0, 1])  # 1 flip in steps 1-2, 3 in steps 3-5
    assert sub.rates == [1 / (4 * 2), 3 / (4 * 3)]
    epoch([0, 0, 4, 4, 4])
    assert sub.rates[2:] == [0.0, 12 / (4 * 3)]
    assert seen == [sub.rates[:1], sub.rates[:2], sub.rates[:3], sub.rates]


@pytest.mark.parametrize("points,steps", [(0, 5), (2, 0), (-1, 3)])
def test_sub_epoch_rates_validate_points_and_steps(points, steps):
    from bnn_tune.metrics import SubEpochFlipRates

    w = torch.nn.Parameter(torch.ones(2))
    with pytest.raises(ValueError, match="`points` and `steps_per_epoch` must be >= 1"):
        SubEpochFlipRates(FlipCounter([("w", w)]), steps_per_epoch=steps, points=points)
    SubEpochFlipRates(FlipCounter([("w", w)]), steps_per_epoch=1, points=1)  # the smallest valid values


def test_more_points_than_steps_gives_one_rate_per_step():
    from bnn_tune.metrics import SubEpochFlipRates

    w = torch.nn.Parameter(torch.tensor([1.0, -1.0]))
    sub = SubEpochFlipRates(FlipCounter([("w", w)]), steps_per_epoch=3, points=8)
    assert sub.bounds == {1, 2, 3}


@pytest.mark.parametrize("packed", [True, False])
def test_one_step_epochs_get_a_rate_each(packed):
    # an epoch of one step (a tiny dataset, a large batch): the counter's reset must still start a new window,
    # although the counter is back at exactly the step count the previous window ended on
    from bnn_tune.metrics import SubEpochFlipRates

    w = torch.nn.Parameter(torch.tensor([1.0, -1.0]))
    opt = torch.optim.SGD([w], lr=1.0)
    counter = FlipCounter([("w", w)], packed=packed).attach(opt)
    sub = SubEpochFlipRates(counter, steps_per_epoch=1, points=8).attach(opt)
    for grad in ([2.0, 0.0], [0.0, 0.0], [-2.0, -2.0]):  # 1 flip, none, 2 flips
        counter.reset()
        w.grad = torch.tensor(grad)
        opt.step()
    assert sub.rates == [0.5, 0.0, 1.0]
