"""Unit tests of the binary optimizers: update rules, validation, foreach parity, state round trips."""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch

from bnn_tune.optim import (
    BMD,
    BNEW,
    Bop,
    Bop2ndOrder,
    GradientFilter,
    LatentAdam,
    TanhSign,
    install_clip_quantizers,
    install_tanh_quantizers,
)
from bnn_tune.optim._bnew import bnew_phase_steps


def _pm1(*shape, generator):
    return torch.where(torch.rand(*shape, generator=generator) < 0.5, -1.0, 1.0)


def _params(seed=0, shapes=((7, 5), (3, 4, 2), (11,), (300, 501)), binary=True):
    g = torch.Generator().manual_seed(seed)
    if binary:
        return [torch.nn.Parameter(_pm1(*s, generator=g)) for s in shapes]
    return [torch.nn.Parameter(torch.rand(*s, generator=g) * 2 - 1) for s in shapes]


def _grads(params, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(p.shape, generator=g) for p in params]


# Constructors for every optimizer class, used by the parametrized tests.
FACTORIES = {
    "bop": (lambda ps, fe: Bop(ps, gamma=0.3, threshold=0.2, foreach=fe), True),
    "bop2": (lambda ps, fe: Bop2ndOrder(ps, gamma=0.3, sigma=0.2, threshold=0.3, foreach=fe), True),
    "filter1": (lambda ps, fe: GradientFilter(ps, order=1, gamma=0.3, threshold=0.1, foreach=fe), True),
    "filter2": (lambda ps, fe: GradientFilter(ps, order=2, gamma=0.3, alpha=0.2, foreach=fe), True),
    "latent_adam": (lambda ps, fe: LatentAdam(ps, lr=0.05, weight_decay=0.01, foreach=fe), False),
    "bmd": (lambda ps, fe: BMD(ps, lr=0.05, beta0=1.0, beta_growth=10.0, total_steps=6, foreach=fe), False),
    "bnew": (lambda ps, fe: BNEW(ps, lr=0.05, beta_T=20.0, t_start=0.3, t_lock=0.7, total_steps=10,
                                 foreach=fe), False),
}


def _run(name, foreach, steps=8, seed=0):
    make, binary = FACTORIES[name]
    params = _params(seed, binary=binary)
    opt = make(params, foreach)
    for t in range(steps):
        for p, g in zip(params, _grads(params, 100 + t)):
            p.grad = g
        opt.step()
    return params, opt


# ----------------------------------------------------------------------------- Bop rule
@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("threshold", [0.0, 0.05, 0.5])
def test_bop_flips_exactly_the_rule(foreach, threshold):
    gen = torch.Generator().manual_seed(1)
    N = 150_001  # more than one CPU block of the single-tensor path, with a partial last block
    w0 = _pm1(N, generator=gen)
    m0 = torch.randn(N, generator=gen) * 0.3
    g = torch.randn(N, generator=gen)
    gamma = 0.25
    w = torch.nn.Parameter(w0.clone())
    opt = Bop([w], gamma=gamma, threshold=threshold, foreach=foreach)
    opt.state[w]["exp_avg"] = m0.clone()
    w.grad = g
    opt.step()
    m = opt.state[w]["exp_avg"]
    torch.testing.assert_close(m, (1 - gamma) * m0 + gamma * g)
    expected_flip = (m.abs() > threshold) & (torch.sign(m) == torch.sign(w0))
    assert torch.equal(w.detach() == -w0, expected_flip)
    assert torch.equal(w.detach().abs(), torch.ones(N))
    assert 0 < int(expected_flip.sum()) < N


@pytest.mark.parametrize("foreach", [False, True])
def test_bop_ties_do_not_flip(foreach):
    # gamma = 1 makes m = g exactly, so the ties are exact.
    w0 = torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0, -1.0])
    g = torch.tensor([0.5, -0.5, 0.0, -0.0, 0.5000001, -0.5000001, -0.7, 0.7])
    w = torch.nn.Parameter(w0.clone())
    opt = Bop([w], gamma=1.0, threshold=0.5, foreach=foreach)
    w.grad = g
    opt.step()
    # |m| == tau: no flip (strict); m == 0: no flip; just above tau with equal signs: flip; opposite: stay.
    assert w.tolist() == [1.0, -1.0, 1.0, -1.0, -1.0, 1.0, 1.0, -1.0]

    w = torch.nn.Parameter(w0.clone())
    opt = Bop([w], gamma=1.0, threshold=0.0, foreach=foreach)
    w.grad = g
    opt.step()
    # tau = 0: every aligned nonzero m flips, m == 0 never does.
    assert w.tolist() == [-1.0, 1.0, 1.0, -1.0, -1.0, 1.0, 1.0, -1.0]


def test_bop_state_is_one_float_per_weight():
    params, opt = _run("bop", False, steps=2)
    for p in params:
        state = opt.state[p]
        assert list(state) == ["exp_avg"]
        assert state["exp_avg"].shape == p.shape and state["exp_avg"].dtype == p.dtype


def test_bop2_normalised_rule():
    gen = torch.Generator().manual_seed(2)
    w0 = _pm1(1000, generator=gen)
    g = torch.randn(1000, generator=gen)
    w = torch.nn.Parameter(w0.clone())
    gamma, sigma, tau, eps = 0.5, 0.25, 0.6, 1e-10
    opt = Bop2ndOrder([w], gamma=gamma, sigma=sigma, threshold=tau, eps=eps)
    w.grad = g
    opt.step()
    m, v = gamma * g, sigma * g * g
    ratio = m / (v.sqrt() + eps)  # = gamma/sqrt(sigma) * sign(g) = +-1 here
    expected = (ratio.abs() > tau) & (torch.sign(m) == torch.sign(w0))
    assert torch.equal(w.detach() == -w0, expected)


@pytest.mark.parametrize("foreach", [False, True])
def test_bop2_multi_step_hand_recurrence(foreach):
    """Six steps from non-zero state: catches a wrong moment decay (e.g. ``v *= sigma``) or a swapped rate."""
    gamma, sigma, tau, eps = 0.3, 0.2, 0.5, 1e-10
    params = [p.detach().double().requires_grad_(True) for p in _params(7, shapes=((40, 30), (77,)))]
    w = [p.detach().clone() for p in params]
    m = [torch.zeros_like(x) for x in w]
    v = [torch.zeros_like(x) for x in w]
    opt = Bop2ndOrder(params, gamma=gamma, sigma=sigma, threshold=tau, eps=eps, foreach=foreach)
    flips = 0
    for t in range(6):
        grads = [g.double() for g in _grads(params, 60 + t)]
        for p, g in zip(params, grads):
            p.grad = g
        opt.step()
        for i, g in enumerate(grads):
            m[i] = (1 - gamma) * m[i] + gamma * g
            v[i] = (1 - sigma) * v[i] + sigma * g * g
            flip = (m[i] / (v[i].sqrt() + eps)) * w[i] > tau
            flips += int(flip.sum())
            w[i] = torch.where(flip, -w[i], w[i])
            torch.testing.assert_close(opt.state[params[i]]["exp_avg"], m[i])
            torch.testing.assert_close(opt.state[params[i]]["exp_avg_sq"], v[i])
            assert torch.equal(params[i].detach(), w[i]), f"step {t}"
    assert flips > 100  # the rule was exercised


@pytest.mark.parametrize("foreach", [False, True])
def test_filter_order1_is_bop_step_for_step(foreach):
    """The order-1 filter with a threshold is Bop (m <- EMA of g, flip where m * w > tau)."""
    p1 = _params(8, shapes=((50, 20), (31,)))
    p2 = [torch.nn.Parameter(p.detach().clone()) for p in p1]
    f = GradientFilter(p1, order=1, gamma=0.25, threshold=0.4, foreach=foreach)
    b = Bop(p2, gamma=0.25, threshold=0.4, foreach=foreach)
    changed = 0
    for t in range(8):
        for a, c, g in zip(p1, p2, _grads(p1, 80 + t)):
            a.grad, c.grad = g, g.clone()
        before = [a.detach().clone() for a in p1]
        f.step()
        b.step()
        changed += sum(int((a != x).sum()) for a, x in zip(p1, before))
        for a, c in zip(p1, p2):
            assert torch.equal(a, c), f"step {t}"
            torch.testing.assert_close(f.state[a]["exp_avg"], b.state[c]["exp_avg"])
    # with tau = 0 instead, some weight would flip differently: the threshold is exercised
    p3 = [torch.nn.Parameter(p.detach().clone()) for p in _params(8, shapes=((50, 20), (31,)))]
    f0 = GradientFilter(p3, order=1, gamma=0.25, threshold=0.0, foreach=foreach)
    for t in range(8):
        for a, g in zip(p3, _grads(p3, 80 + t)):
            a.grad = g
        f0.step()
    assert changed > 0 and any(not torch.equal(a, c) for a, c in zip(p3, p2))


@pytest.mark.parametrize("foreach", [False, True])
def test_bmd_latent_step_is_torch_adam(foreach):
    """BMD's update of w~ is Adam's, step for step (betas not swapped, bias correction kept)."""
    params = _params(9, shapes=((12, 7), (5,)), binary=False)
    ref = [torch.nn.Parameter(p.detach().clone()) for p in params]
    opt = BMD(params, lr=0.03, betas=(0.8, 0.95), eps=1e-6, beta0=1.0, beta_growth=10.0, total_steps=6,
              foreach=foreach)
    adam = torch.optim.Adam(ref, lr=0.03, betas=(0.8, 0.95), eps=1e-6, foreach=False)
    for t in range(6):
        for p, r, g in zip(params, ref, _grads(params, 90 + t)):
            p.grad, r.grad = g, g.clone()
        opt.step()
        adam.step()
        for p, r in zip(params, ref):
            torch.testing.assert_close(p, r, msg=f"step {t}")


def test_filter_order2_sets_sign_opposite_to_inertia():
    params, opt = _run("filter2", False, steps=5)
    for p in params:
        i = opt.state[p]["inertia"]
        nz = i != 0
        assert torch.equal(p.detach()[nz], -torch.sign(i[nz]))


def test_latent_adam_matches_torch_adam_then_clip():
    params = _params(3, binary=False)
    ref = [torch.nn.Parameter(p.detach().clone()) for p in params]
    opt = LatentAdam(params, lr=0.1, weight_decay=0.01, clip_value=0.5)
    adam = torch.optim.Adam(ref, lr=0.1, weight_decay=0.01, foreach=False)
    for t in range(5):
        for p, r, g in zip(params, ref, _grads(params, t)):
            p.grad, r.grad = g, g.clone()
        opt.step()
        adam.step()
        with torch.no_grad():
            for r in ref:
                r.clamp_(-0.5, 0.5)
        for p, r in zip(params, ref):
            torch.testing.assert_close(p, r)


def test_bmd_beta_schedule_and_quantizer():
    layer = torch.nn.Module()
    from bnn_tune.nn import BinaryLinear

    layer = BinaryLinear(6, 3)
    (q,) = install_tanh_quantizers(layer, beta0=2.0)
    opt = BMD(layer.parameters(), lr=0.01, beta0=2.0, beta_growth=8.0, total_steps=3)
    assert float(q.beta) == 2.0
    x = torch.randn(4, 6)
    for t in range(1, 5):
        layer(x).sum().backward()
        opt.step()
        opt.zero_grad()
        assert float(q.beta) == pytest.approx(2.0 * 8.0 ** (min(t, 3) / 3))
    w = layer.weight.detach()
    torch.testing.assert_close(layer.quantized_weight(), torch.tanh(float(q.beta) * w))
    layer.eval()
    assert torch.equal(layer.quantized_weight(), torch.where(w >= 0, 1.0, -1.0))


def test_bmd_backward_is_mirror_descent():
    from bnn_tune.nn import BinaryLinear

    layer = BinaryLinear(5, 2, input_quantizer=None)
    install_tanh_quantizers(layer, beta0=3.0)
    x = torch.randn(4, 5)
    w = layer.quantized_weight().detach().requires_grad_(True)
    torch.nn.functional.linear(x, w).square().sum().backward()
    layer(x).square().sum().backward()
    # dL/dw~ := dL/dw at w = tanh(beta w~): no tanh derivative.
    torch.testing.assert_close(layer.weight.grad, w.grad)


def test_bnew_phases():
    total, t_start, t_lock = 20, 0.25, 0.75
    start, lock = bnew_phase_steps(total, t_start, t_lock)
    assert (start, lock) == (5, 15)
    w = torch.nn.Parameter(torch.tensor([0.1, -0.2, 0.05, -0.01]))
    opt = BNEW([w], lr=0.05, beta_T=10.0, t_start=t_start, t_lock=t_lock, total_steps=total)
    group = opt.param_groups[0]
    # eta decays within phase 1 and again over the rest of the run from phase 2 (the reference's phase-2
    # run); reg_t = beta (t - S + 1) with beta = beta_T / T, no eta in it.
    assert BNEW.schedule(group, 0) == ("1", 0.05, 0.0)
    assert BNEW.schedule(group, 4)[1] == pytest.approx(0.05 * (1 - 4 / 5))
    phase, eta, reg = BNEW.schedule(group, 5)
    assert (phase, eta, reg) == ("2", 0.05, pytest.approx(10.0 / 10))
    assert BNEW.schedule(group, 9)[1:] == (pytest.approx(0.05 * (1 - 4 / 15)), pytest.approx(5.0))
    assert BNEW.schedule(group, 14)[2] == pytest.approx(10.0)  # reg reaches beta_T at the lock
    assert BNEW.schedule(group, 15)[0] == "4"
    gen = torch.Generator().manual_seed(0)
    for t in range(total):
        w.grad = torch.randn(4, generator=gen)
        before = w.detach().clone()
        opt.step()
        assert w.abs().max() <= 1.0 + 0.05 * 1.01  # clamp, then one Adam step of size <= ~eta
        if t == lock - 1:
            assert set(w.tolist()) <= {-1.0, 1.0}
            assert opt.is_locked()
        if t >= lock:
            assert torch.equal(w.detach(), before)  # frozen


@pytest.mark.parametrize("foreach", [False, True])
def test_bnew_is_the_reference_recurrence(foreach):
    """Several steps against the authors' loop (Alasdair-P/bnew binary_main.py + prox.py u_reg):
    w <- clamp((1 + 2 reg_t) w) after backward, then Adam; a fresh Adam for phase 2; reg_t linear in t."""
    total, t_start, t_lock, lr, beta_T = 12, 0.25, 0.75, 0.05, 0.6
    start, lock = bnew_phase_steps(total, t_start, t_lock)
    assert (start, lock) == (3, 9)
    params = _params(5, shapes=((6, 4), (9,)), binary=False)
    with torch.no_grad():
        for p in params:
            p.mul_(0.3)
    ref = [p.detach().clone().double() for p in params]
    opt = BNEW(params, lr=lr, beta_T=beta_T, t_start=t_start, t_lock=t_lock, total_steps=total, foreach=foreach)
    ref_params = [torch.nn.Parameter(r) for r in ref]
    adam = None
    for t in range(total):
        grads = _grads(params, 40 + t)
        for p, g in zip(params, grads):
            p.grad = g
        opt.step()
        if t < lock:
            if t in (0, start):  # phase 1's Adam, then a fresh one for phase 2
                adam = torch.optim.Adam(ref_params, lr=lr, foreach=False)
            if t < start:
                eta, reg = lr * (1 - t / start), 0.0
            else:
                s = t - start
                eta, reg = lr * (1 - s / (total - start)), beta_T / (lock - start) * (s + 1)
            with torch.no_grad():
                for r in ref_params:
                    r.mul_(1 + 2 * reg).clamp_(-1, 1)
            for r, g in zip(ref_params, grads):
                r.grad = g.double()
            adam.param_groups[0]["lr"] = eta
            adam.step()
            if t == lock - 1:
                with torch.no_grad():
                    for r in ref_params:
                        r.copy_(torch.where(r >= 0, 1.0, -1.0))
        for p, r in zip(params, ref_params):
            torch.testing.assert_close(p.detach().double(), r.detach(), rtol=1e-5, atol=1e-6, msg=f"step {t}")
    assert all(set(p.unique().tolist()) <= {-1.0, 1.0} for p in params)


def test_bnew_evaluates_the_sign_network():
    from bnn_tune.nn import BinaryLinear
    from bnn_tune.optim import install_clip_quantizers, relaxed_weights

    layer = BinaryLinear(3, 2, input_quantizer=None)
    install_clip_quantizers(layer)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.5, -0.25, 0.0], [-0.9, 0.1, 0.3]]))
    w = layer.weight.detach()
    assert torch.equal(layer.train().quantized_weight(), w)  # training: the relaxed weight
    assert torch.equal(layer.eval().quantized_weight(), torch.where(w >= 0, 1.0, -1.0))  # eval: the sign
    with relaxed_weights(layer):
        assert torch.equal(layer.quantized_weight(), w)
    assert torch.equal(layer.quantized_weight(), torch.where(w >= 0, 1.0, -1.0))


# ----------------------------------------------------------------------------- foreach parity
@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_foreach_matches_single_tensor(name):
    p1, o1 = _run(name, foreach=False, steps=9)
    p2, o2 = _run(name, foreach=True, steps=9)
    for a, b in zip(p1, p2):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    for a, b in zip(p1, p2):
        for k, v in o1.state[a].items():
            torch.testing.assert_close(v, o2.state[b][k], rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------- state round trips
@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_state_dict_round_trip_resumes_exactly(name):
    make, binary = FACTORIES[name]
    full, _ = _run(name, foreach=False, steps=9)
    params, opt = _run(name, foreach=False, steps=4)
    sd = opt.state_dict()
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)
    sd2 = pickle.loads(pickle.dumps(copy.deepcopy(loaded)))
    params2 = [torch.nn.Parameter(p.detach().clone()) for p in params]
    opt2 = make(params2, False)
    opt2.load_state_dict(sd2)
    for t in range(4, 9):
        for p, g in zip(params2, _grads(params2, 100 + t)):
            p.grad = g
        opt2.step()
    for a, b in zip(full, params2):
        torch.testing.assert_close(a, b)


# ----------------------------------------------------------------------------- validation
P = [torch.nn.Parameter(torch.ones(2))]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Bop(P, gamma=1.5), "`gamma` must be in (0, 1], but got gamma=1.5."),
        (lambda: Bop(P, gamma=0.0), "`gamma` must be in (0, 1], but got gamma=0.0."),
        (lambda: Bop(P, gamma=float("nan")), "`gamma` must be in (0, 1]"),
        (lambda: Bop(P, threshold=-1e-8), "`threshold` must be a finite number >= 0, but got threshold=-1e-08."),
        (lambda: Bop(P, gamma="big"), "`gamma` must be in (0, 1], but got gamma='big'."),
        (lambda: Bop2ndOrder(P, sigma=2.0), "`sigma` must be in (0, 1], but got sigma=2.0."),
        (lambda: Bop2ndOrder(P, eps=0.0), "`eps` must be a finite number > 0, but got eps=0.0."),
        (lambda: GradientFilter(P, order=3), "`order` must be 1 or 2, but got order=3."),
        (lambda: GradientFilter(P, alpha=0.0), "`alpha` must be in (0, 1], but got alpha=0.0."),
        (lambda: GradientFilter(P, gamma=-0.1), "`gamma` must be in (0, 1], but got gamma=-0.1."),
        (lambda: LatentAdam(P, lr=-1.0), "`lr` must be a finite number > 0, but got lr=-1.0."),
        (lambda: LatentAdam(P, clip_value=0.0), "`clip_value` must be a finite number > 0 or None, but got clip_value=0.0."),
        (lambda: LatentAdam(P, betas=(0.9, 1.0)), "`betas[1]` must be in [0, 1), but got betas[1]=1.0."),
        (lambda: BMD(P, beta0=0.0, total_steps=10), "`beta0` must be a finite number > 0, but got beta0=0.0."),
        (lambda: BMD(P, beta_growth=0.5, total_steps=10), "`beta_growth` must be a finite number >= 1"),
        (lambda: BNEW(P, beta=-0.1, total_steps=10), "`beta` must be a finite number >= 0 or None, but got beta=-0.1."),
        (lambda: BNEW(P, beta_T=-1.0, total_steps=10), "`beta_T` must be a finite number >= 0 or None, but got beta_T=-1.0."),
        (lambda: BNEW(P, beta=1.0, beta_T=1.0, total_steps=10), "Give exactly one of `beta`"),
        (lambda: BNEW(P, beta_T=1.0, t_lock=1.5, total_steps=10), "`t_lock` must be in (0, 1], but got t_lock=1.5."),
        (lambda: BNEW(P, beta_T=1.0, t_start=0.9, t_lock=0.5, total_steps=10), "`t_start` must be in [0, t_lock)"),
        (lambda: BNEW(P, beta_T=1.0, total_steps=0), "`total_steps` must be a finite number >= 1"),
        # the smallest invalid value of each open bound (issue 26: an off-by-one bound must fail a test)
        (lambda: BNEW(P, beta_T=1.0, lr=0.0, total_steps=10), "`lr` must be a finite number > 0, but got lr=0.0."),
        (lambda: BNEW(P, beta_T=1.0, t_start=1.5, total_steps=10), "`t_start` must be in [0, 1), but got t_start=1.5."),
        (lambda: TanhSign(0.0), "`beta` must be a finite number > 0, but got beta=0.0."),
        (lambda: Bop2ndOrder(P, gamma=0.0), "`gamma` must be in (0, 1], but got gamma=0.0."),
        (lambda: LatentAdam(P, betas=(1.0, 0.999)), "`betas[0]` must be in [0, 1), but got betas[0]=1.0."),
    ],
)
def test_bad_hyperparameters_raise(make, message):
    with pytest.raises(ValueError) as info:
        make()
    assert message in str(info.value)


def test_hyperparameters_live_in_param_groups():
    assert {"gamma", "threshold"} <= set(Bop(P).param_groups[0])
    assert {"order", "gamma", "alpha", "threshold"} <= set(GradientFilter(P).param_groups[0])
    assert {"beta_T", "t_lock", "t_start", "reg_t"} <= set(BNEW(P, beta_T=1.0, total_steps=5).param_groups[0])
    assert {"beta0", "beta_growth", "beta"} <= set(BMD(P, total_steps=5).param_groups[0])


# ----------------------------------------------------------------------------- issue 26 (tools/mutate.py)
OTHER_SETTINGS = {  # different values for every hyperparameter the FACTORIES set
    "bop": lambda ps, fe: Bop(ps, gamma=0.9, threshold=0.7, foreach=fe),
    "bop2": lambda ps, fe: Bop2ndOrder(ps, gamma=0.9, sigma=0.9, threshold=0.9, foreach=fe),
    "filter1": lambda ps, fe: GradientFilter(ps, order=1, gamma=0.9, threshold=0.9, foreach=fe),
    "filter2": lambda ps, fe: GradientFilter(ps, order=2, gamma=0.9, alpha=0.9, foreach=fe),
    "latent_adam": lambda ps, fe: LatentAdam(ps, lr=0.5, weight_decay=0.5, foreach=fe),
    "bmd": lambda ps, fe: BMD(ps, lr=0.5, beta0=3.0, beta_growth=2.0, total_steps=6, foreach=fe),
    "bnew": lambda ps, fe: BNEW(ps, lr=0.5, beta_T=5.0, t_start=0.1, t_lock=0.9, total_steps=10, foreach=fe),
}


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_every_hyperparameter_is_read_from_the_param_group_at_each_step(name, foreach):
    """A scheduler changes ``param_groups``, not ``defaults``: an optimizer built with other settings whose groups
    are then set to the reference's values must step exactly like the reference (Bop reading gamma from its
    defaults would make a gamma schedule do nothing)."""
    ref, _ = _run(name, foreach, steps=5)
    make, binary = FACTORIES[name]
    params = _params(0, binary=binary)
    wanted = make(_params(0, binary=binary), foreach).param_groups[0]
    opt = OTHER_SETTINGS[name](params, foreach)
    changed = [k for k in wanted if k != "params" and opt.param_groups[0][k] != wanted[k]]
    assert changed, "OTHER_SETTINGS must differ from FACTORIES"
    for k in wanted:
        if k != "params":
            opt.param_groups[0][k] = wanted[k]
    for t in range(5):
        for p, g in zip(params, _grads(params, 100 + t)):
            p.grad = g
        opt.step()
    for a, b in zip(ref, params):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def _bop_hand(w, m, grads, gammas, taus):
    """Algorithm 2 by hand, one step per (g, gamma, tau): m <- (1 - gamma) m + gamma g; flip where
    |m| > tau and sign(m) = sign(w)."""
    w, m = w.clone(), m.clone()
    for g, gamma, tau in zip(grads, gammas, taus):
        m = (1 - gamma) * m + gamma * g
        flip = (m.abs() > tau) & (torch.sign(m) == torch.sign(w))
        w = torch.where(flip, -w, w)
    return w, m


@pytest.mark.parametrize("layout", ["contiguous", "transposed", "strided"])
@pytest.mark.parametrize("foreach", [False, True])
def test_bop_follows_a_changing_gamma_and_threshold_over_several_steps(foreach, layout):
    """Six steps from non-zero state with gamma and threshold changed between steps (as a schedule does), for
    contiguous, transposed and strided (every other column) weights: all take the same rule, the hand recurrence
    in double precision."""
    gen = torch.Generator().manual_seed(5)
    rows, cols = 70, 40  # 2800 weights
    base = _pm1(rows, 2 * cols, generator=gen).double()
    w0 = {"contiguous": base[:, :cols].contiguous(), "transposed": base[:, :cols].t().contiguous().t(),
          "strided": base[:, ::2]}[layout]
    assert w0.is_contiguous() == (layout == "contiguous")
    m0 = torch.randn(rows, cols, generator=gen, dtype=torch.float64) * 0.3
    grads = [torch.randn(rows, cols, generator=gen, dtype=torch.float64) for _ in range(6)]
    gammas, taus = [0.5, 0.5, 0.25, 0.125, 0.125, 1.0], [0.25, 0.0, 0.25, 0.5, 0.125, 0.75]
    w = torch.nn.Parameter(base.clone()[:, ::2] if layout == "strided" else w0.clone(memory_format=torch.preserve_format))
    assert w.is_contiguous() == (layout == "contiguous") and torch.equal(w.detach(), w0)
    opt = Bop([w], gamma=gammas[0], threshold=taus[0], foreach=foreach)
    opt.state[w]["exp_avg"] = m0.clone()
    for g, gamma, tau in zip(grads, gammas, taus):
        opt.param_groups[0]["gamma"], opt.param_groups[0]["threshold"] = gamma, tau
        w.grad = g.clone(memory_format=torch.preserve_format) if layout == "contiguous" else g.t().contiguous().t()
        opt.step()
    w_hand, m_hand = _bop_hand(w0, m0, grads, gammas, taus)
    torch.testing.assert_close(opt.state[w]["exp_avg"], m_hand)
    assert torch.equal(w.detach(), w_hand)
    assert set(w.detach().unique().tolist()) <= {-1.0, 1.0}


@pytest.mark.parametrize("foreach", [False, True])
def test_bop_gives_each_param_group_its_own_gamma(foreach):
    gen = torch.Generator().manual_seed(6)
    w1, w2 = (torch.nn.Parameter(_pm1(50, generator=gen)) for _ in range(2))
    g = torch.randn(50, generator=gen)
    opt = Bop([{"params": [w1], "gamma": 1.0, "threshold": 0.0}, {"params": [w2], "gamma": 0.25}], threshold=0.0,
              foreach=foreach)
    w1.grad, w2.grad = g.clone(), g.clone()
    opt.step()
    torch.testing.assert_close(opt.state[w1]["exp_avg"], g)
    torch.testing.assert_close(opt.state[w2]["exp_avg"], 0.25 * g)


def test_clip_quantizers_clip_the_latent_weights_to_exactly_the_unit_box():
    from bnn_tune.nn import BinaryLinear

    layer = BinaryLinear(4, 3)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[-3.0, -1.0, -0.5, 0.0], [0.5, 1.0, 3.0, -1.5], [2.0, -2.0, 0.25, 1.5]]))
    install_clip_quantizers(layer)
    assert layer.weight.tolist() == [[-1.0, -1.0, -0.5, 0.0], [0.5, 1.0, 1.0, -1.0], [1.0, -1.0, 0.25, 1.0]]


def test_bop_constructor_defaults_are_the_papers_cifar10_settings():
    # the docstring's promise: gamma 1e-4 and tau 1e-8 (Helwegen et al. 2019, Sec. 5.2); the registry's
    # digits-sized defaults are separate (test_registry_defaults_agree_with_the_optimizer_classes)
    group = Bop(P).param_groups[0]
    assert (group["gamma"], group["threshold"]) == (1e-4, 1e-8)
