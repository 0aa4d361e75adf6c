"""Binary layers: ``BinaryLinear`` and ``BinaryConv2d``.

A binary layer computes ``q_in(x) @ q_w(W)^T`` where ``q_in`` binarizes the input activations and
``q_w`` the weights (both ``ste_sign`` by default). ``W`` is a float parameter: for latent-weight
optimizers it holds the latent weights; for Bop it holds the binary weights themselves (+-1), which
``ste_sign`` passes through unchanged. Optimizers that change the forward map of the weights (BMD's
``tanh(beta w)``, BNEW's real weights in [-1, 1]) replace ``weight_quantizer``.

``input_quantizer=None`` keeps real-valued activations; ``weight_quantizer=None`` keeps real-valued
weights (used for the real last layer that reads binary activations). Only weights with a quantizer
are *binary parameters* (:func:`is_binary_parameter`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ._quantizers import SteSign, get_quantizer, padded_sign, padded_sign_conv2d, ste_sign

__all__ = [
    "BinaryConv2d",
    "BinaryLinear",
    "BinaryParameter",
    "binary_parameters",
    "is_binary_parameter",
    "is_bounded",
    "is_sign_valued",
    "mark_bounded",
    "mark_sign_valued",
]

class BinaryParameter(nn.Parameter):
    """A parameter whose forward value is binarized (the weight of a binary layer).

    A subclass rather than an attribute so that the mark survives ``copy.deepcopy``, pickling and
    ``Module.to``.
    """

    def __reduce_ex__(self, proto):  # keep the subclass through pickling (Ray ships models by pickle)
        return (_rebuild_binary_parameter, (self.data, self.requires_grad))


def _rebuild_binary_parameter(data: torch.Tensor, requires_grad: bool) -> BinaryParameter:
    return BinaryParameter(data, requires_grad=requires_grad)


def is_binary_parameter(p: torch.Tensor) -> bool:
    """True when ``p`` is the weight of a binary layer (its forward value is +-1)."""
    return isinstance(p, BinaryParameter)


def binary_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """``(name, parameter)`` for every binary parameter of ``model``, in module order."""
    return [(n, p) for n, p in model.named_parameters() if is_binary_parameter(p)]


_SIGN_VALUED_AT = "_bnn_tune_sign_valued_at"


def mark_sign_valued(p: torch.Tensor) -> None:
    """Record that every value of ``p`` is exactly -1.0 or +1.0 *now* (at its current version).

    The mark is the tensor's in-place version counter at the time of the call: any later in-place
    change (an optimizer step, ``load_state_dict``, ``nn.init``) invalidates it, so it can only be
    stale if the values are changed behind autograd's back (through ``p.data``). The latent-free
    optimizers (Bop, Bop2ndOrder, GradientFilter) check the values once when they are built and
    re-mark after each step (a flip ``w <- -w`` keeps +-1 exact). The mark is lost by pickling.
    """
    setattr(p, _SIGN_VALUED_AT, p._version)


def is_sign_valued(p: torch.Tensor) -> bool:
    """True when :func:`mark_sign_valued` marked ``p`` and it was not modified in place since."""
    return getattr(p, _SIGN_VALUED_AT, None) == p._version


_BOUNDED_AT = "_bnn_tune_bounded_at"


def mark_bounded(p: torch.Tensor, bound: float) -> None:
    """Record that ``|p| <= bound`` holds elementwise *now* (NaN aside), like :func:`mark_sign_valued`.

    LatentAdam marks its latent weights after clipping them to ``[-clip, clip]``: the straight-through
    mask ``1[|w| <= clip]`` of the weight quantizer is then 1 everywhere and need not be computed.
    """
    setattr(p, _BOUNDED_AT, (p._version, float(bound)))


def is_bounded(p: torch.Tensor, bound: float) -> bool:
    """True when :func:`mark_bounded` marked ``p`` with a bound ``<= bound`` and it was not changed since."""
    mark = getattr(p, _BOUNDED_AT, None)
    return mark is not None and mark[0] == p._version and mark[1] <= bound


def _ste_weight(w: torch.Tensor, q: nn.Module) -> torch.Tensor | None:
    """The forward weight of ``ste_sign`` computed with less work when the mark allows it, else None.

    ste_sign maps +-1 to itself and its pseudo-gradient ``1[|w| <= clip]`` is 1 at +-1 when clip >= 1, so
    a sign-valued weight passes unchanged (forward and backward exactly the identity, grad * 1.0 == grad);
    a weight known to lie in [-clip, clip] gets the unclipped estimator (the mask would be all ones). A
    NaN weight is the one difference: it would get a zero mask, the unclipped one passes the gradient
    (which is NaN already: the NaN weight made the forward pass NaN).
    """
    if type(q) is not SteSign:
        return None
    clip = math.inf if q.clip_value is None else float(q.clip_value)
    if clip >= 1.0 and is_sign_valued(w):
        return w
    if math.isinf(clip) or is_bounded(w, clip):
        return ste_sign(w, None)
    return None


def _as_quantizer(q: str | nn.Module | None) -> nn.Module | None:
    if q is None or isinstance(q, nn.Module):
        return q
    return get_quantizer(q)


class _BinaryMixin:
    weight: torch.Tensor
    input_quantizer: nn.Module | None
    weight_quantizer: nn.Module | None

    def _init_quantizers(self, input_quantizer, weight_quantizer) -> None:
        self.input_quantizer = _as_quantizer(input_quantizer)
        self.weight_quantizer = _as_quantizer(weight_quantizer)
        if self.weight_quantizer is not None and not isinstance(self.weight, BinaryParameter):
            self.weight = BinaryParameter(self.weight.data, requires_grad=self.weight.requires_grad)

    def quantized_weight(self) -> torch.Tensor:
        """The weight the forward pass uses (+-1 for binary layers).

        A weight that already holds +-1 values (:func:`is_sign_valued`: Bop's weights) passes through
        unchanged when the quantizer is the identity on +-1 (``ste_sign`` with ``clip_value >= 1``), and
        a latent weight clipped to ``[-clip, clip]`` (:func:`is_bounded`: LatentAdam's) skips the
        all-ones straight-through mask: the same numbers, forward and backward, with less work.
        """
        q = self.weight_quantizer
        if q is None:
            return self.weight
        fast = _ste_weight(self.weight, q)
        return q(self.weight) if fast is None else fast

    def quantized_input(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.input_quantizer is None else self.input_quantizer(x)

    @property
    def binary(self) -> bool:
        return is_binary_parameter(self.weight)


class BinaryLinear(_BinaryMixin, nn.Linear):
    """Linear layer with binarized input activations and weights.

    Args:
        in_features, out_features, bias: as :class:`torch.nn.Linear` (bias off by default: a
            batch-norm normally follows).
        input_quantizer: name or module binarizing the input, or ``None`` for real activations.
        weight_quantizer: name or module binarizing the weight, or ``None`` for real weights.

    Example:
        >>> layer = BinaryLinear(4, 2)
        >>> y = layer(torch.randn(3, 4))
        >>> is_binary_parameter(layer.weight)
        True
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = False,
        *,
        input_quantizer: str | nn.Module | None = "ste_sign",
        weight_quantizer: str | nn.Module | None = "ste_sign",
    ) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self._init_quantizers(input_quantizer, weight_quantizer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.quantized_input(x), self.quantized_weight(), self.bias)


class BinaryConv2d(_BinaryMixin, nn.Conv2d):
    """2-D convolution with binarized input activations and weights.

    Zero padding would feed 0 (neither +1 nor -1) into a binary dot product, so the binarized input
    is padded with ``pad_value`` (+1 by default, as Larq Compute Engine's one-padding) instead: the
    layer stays exactly representable by a packed XNOR/AND-popcount kernel. With real activations
    (``input_quantizer=None``) ordinary zero padding is used.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, bias: as :class:`torch.nn.Conv2d`.
        input_quantizer, weight_quantizer: as :class:`BinaryLinear`.
        pad_value: value used to pad the binarized input: +1.0 or -1.0, or 0.0 for ordinary zero padding
            (larq's default, used by the Bop paper's BinaryNet, ``binarynet_paper``); a zero-padded binary
            conv has no bit-packed form, so :mod:`bnn_tune.export` rejects it.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        bias: bool = False,
        *,
        input_quantizer: str | nn.Module | None = "ste_sign",
        weight_quantizer: str | nn.Module | None = "ste_sign",
        pad_value: float = 1.0,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias)
        if pad_value not in (1.0, -1.0, 0.0):
            raise ValueError(f"`pad_value` must be 1.0, -1.0 or 0.0 (zero padding), but got pad_value={pad_value}.")
        self.pad_value = float(pad_value)
        self._init_quantizers(input_quantizer, weight_quantizer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.quantized_weight()
        if self.input_quantizer is None:
            return F.conv2d(x, w, self.bias, self.stride, self.padding)
        ph, pw = (int(v) for v in self.padding)  # type: ignore[union-attr]
        if ph or pw:  # sign, +-1 padding and the convolution in one autograd node when the quantizer allows it
            y = padded_sign_conv2d(x, w, self.bias, self.stride, ph, pw, self.pad_value,  # type: ignore[arg-type]
                                   self.input_quantizer)
            if y is not None:
                return y
            xq = padded_sign(x, ph, pw, self.pad_value, self.input_quantizer)
            if xq is None:
                xq = F.pad(self.input_quantizer(x), (pw, pw, ph, ph), value=self.pad_value)
        else:
            xq = self.input_quantizer(x)
        return F.conv2d(xq, w, self.bias, self.stride, 0)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", pad_value={self.pad_value}"
