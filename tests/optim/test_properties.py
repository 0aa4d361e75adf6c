"""The theorems behind the optimizers, checked flip for flip on a small binary network.

* Theorem 1 of Helwegen et al. 2019 (seed 002): latent-weight training without clipping and with a
  magnitude-independent pseudo-gradient is invariant to scaling lr and the initial latents by C.
* Quist et al. 2023 (seed 004): the order-2 gradient filter with alpha = eta * lambda is latent SGD
  with EMA momentum and decoupled weight decay, under i = -lambda * w~.
* Bop with tau = 0 is a latent-weight method whose latent weight is the (negative) gradient EMA.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bnn_tune.nn import binarize, ste_sign
from bnn_tune.optim import Bop, GradientFilter, LatentAdam

pytestmark = pytest.mark.filterwarnings("ignore")

SHAPES = [(24, 10), (5, 24)]


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _data(seed=0, n=64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, SHAPES[0][1], generator=g, dtype=torch.float64)
    teacher = torch.randn(SHAPES[1][0], SHAPES[0][1], generator=g, dtype=torch.float64)
    y = (x @ teacher.T).argmax(1)
    return x, y


def _loss(weights, x, y):
    """Binary MLP: real input, binary weights (unclipped STE: magnitude-free), binary hidden activations."""
    w1, w2 = (ste_sign(w, clip_value=None) for w in weights)
    h = ste_sign(x @ w1.T)  # activation STE (clip 1) depends on activations only, not on the weights
    return F.cross_entropy(h @ w2.T / 5.0, y)


def _grads(weights, x, y, batch):
    for w in weights:
        w.grad = None
    _loss(weights, x[batch], y[batch]).backward()
    return [w.grad for w in weights]


def _batches(steps, n=64, bs=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randperm(n, generator=g)[:bs] for _ in range(steps)]


def _latent0(seed=3, scale=0.05):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=torch.float64) * scale for s in SHAPES]


# ----------------------------------------------------------------------------- Theorem 1
@pytest.mark.parametrize("opt_name", ["sgd", "latent_adam"])
@pytest.mark.parametrize("C", [0.25, 8.0, 3.7])
def test_theorem1_lr_and_init_scale_are_one_hyperparameter(opt_name, C):
    x, y = _data()
    lr = 0.05

    def make(params, lr_):
        if opt_name == "sgd":
            return torch.optim.SGD(params, lr=lr_)
        return LatentAdam(params, lr=lr_, clip_value=None)  # Adam's step does not depend on |w~|

    a = [torch.nn.Parameter(w.clone()) for w in _latent0()]
    b = [torch.nn.Parameter(C * w.clone()) for w in _latent0()]
    oa, ob = make(a, lr), make(b, C * lr)
    flips = 0
    for batch in _batches(40):
        prev = [binarize(w.detach()) for w in a]
        _grads(a, x, y, batch)
        _grads(b, x, y, batch)
        oa.step()
        ob.step()
        for wa, wb, p in zip(a, b, prev):
            assert torch.equal(binarize(wa.detach()), binarize(wb.detach()))
            flips += int((binarize(wa.detach()) != p).sum())
    assert flips > 20  # the binary weights really moved


def test_theorem1_needs_the_no_clipping_condition():
    # Control: with latent clipping the invariance is lost (the test above could fail).
    x, y = _data()
    C = 40.0
    a = [torch.nn.Parameter(w.clone()) for w in _latent0()]
    b = [torch.nn.Parameter(C * w.clone()) for w in _latent0()]
    oa, ob = LatentAdam(a, lr=0.05, clip_value=1.0), LatentAdam(b, lr=C * 0.05, clip_value=1.0)
    differs = False
    for batch in _batches(40):
        _grads(a, x, y, batch)
        _grads(b, x, y, batch)
        oa.step()
        ob.step()
        differs |= any(not torch.equal(binarize(wa.detach()), binarize(wb.detach())) for wa, wb in zip(a, b))
    assert differs


# ----------------------------------------------------------------------------- gradient filter mapping
@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize(("gamma", "eta", "lam"), [(0.2, 0.1, 0.5), (1.0, 0.5, 0.02), (0.05, 1.0, 0.1)])
def test_order2_filter_is_latent_sgd_with_momentum_and_weight_decay(foreach, gamma, eta, lam):
    """Latent: m <- (1-gamma) m + gamma g; w~ <- (1 - eta lam) w~ - eta m; w = sign(w~).

    Filter: same m; i <- (1 - alpha) i + alpha m with alpha = eta * lam, i_0 = -lam * w~_0;
    w flips where i * w > 0. Claim: identical binary weights at every step.
    """
    x, y = _data(seed=5)
    latent = [w.clone() for w in _latent0(seed=7, scale=0.5)]
    mom = [torch.zeros_like(w) for w in latent]
    filt = [torch.nn.Parameter(binarize(w)) for w in latent]
    opt = GradientFilter(filt, order=2, gamma=gamma, alpha=eta * lam, foreach=foreach)
    for p, w in zip(filt, latent):
        opt.state[p]["exp_avg"] = torch.zeros_like(w)
        opt.state[p]["inertia"] = -lam * w
    flips = 0
    for batch in _batches(80, seed=2):
        lat_params = [torch.nn.Parameter(binarize(w)) for w in latent]  # forward of latent = sign(w~)
        g_lat = _grads(lat_params, x, y, batch)
        g_filt = _grads(filt, x, y, batch)
        for a, b in zip(g_lat, g_filt):
            assert torch.equal(a, b)
        for i, g in enumerate(g_lat):
            mom[i] = (1 - gamma) * mom[i] + gamma * g
            latent[i] = (1 - eta * lam) * latent[i] - eta * mom[i]
        before = [p.detach().clone() for p in filt]
        opt.step()
        for p, w, b in zip(filt, latent, before):
            assert torch.equal(p.detach(), binarize(w))
            flips += int((p.detach() != b).sum())
    assert flips > 20


def test_order2_filter_forgets_the_init_scale():
    # The latent init scale only sets i_0; for a given gradient sequence its effect on the filter
    # output is the transient (1 - alpha)^t * i_0 (the filter is linear).
    g = torch.Generator().manual_seed(0)
    grads = [torch.randn(50, generator=g) for _ in range(30)]
    i0 = torch.randn(50, generator=g)
    alpha = 0.2
    out = []
    for init in (torch.zeros(50), i0):
        w = torch.nn.Parameter(torch.ones(50))
        opt = GradientFilter([w], order=2, gamma=0.5, alpha=alpha)
        opt.state[w]["exp_avg"] = torch.zeros(50)
        opt.state[w]["inertia"] = init.clone()
        for gr in grads:
            w.grad = gr
            opt.step()
        out.append(opt.state[w]["inertia"])
    torch.testing.assert_close(out[1] - out[0], (1 - alpha) ** 30 * i0)


# ----------------------------------------------------------------------------- Bop, tau = 0
@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("gamma", [1e-2, 0.1, 0.7])
def test_bop_threshold0_is_latent_method_with_ema_latent(foreach, gamma):
    """Latent: w~ <- (1 - gamma) w~ - gamma g, forward sign(w~) (= -EMA of the gradients).

    Bop with tau = 0 and m_0 = -w~_0 (so w_0 = sign(w~_0)): identical binary weights at every step.
    """
    x, y = _data(seed=9)
    latent = [w.clone() for w in _latent0(seed=11, scale=0.01)]
    bop = [torch.nn.Parameter(binarize(w)) for w in latent]
    opt = Bop(bop, gamma=gamma, threshold=0.0, foreach=foreach)
    for p, w in zip(bop, latent):
        opt.state[p]["exp_avg"] = -w.clone()
    flips = 0
    for batch in _batches(80, seed=3):
        g_lat = _grads([torch.nn.Parameter(binarize(w)) for w in latent], x, y, batch)
        _grads(bop, x, y, batch)
        for i, g in enumerate(g_lat):
            latent[i] = (1 - gamma) * latent[i] - gamma * g
        before = [p.detach().clone() for p in bop]
        opt.step()
        for p, w, b in zip(bop, latent, before):
            assert torch.equal(p.detach(), binarize(w))
            flips += int((p.detach() != b).sum())
    assert flips > 20
