"""Tests for supernets.quant: LSQ/LSQ+ fake quantization with per-mode (elastic bit-width) parameters."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

from supernets.quant import (
    BITS_ALLOWED,
    FrozenFakeQuant,
    LsqActQuantizer,
    LsqWeightQuantizer,
    QuantMode,
)

QUANT_BITS = [b for b in BITS_ALLOWED if b != 32]
WEIGHT_MODES = [QuantMode(b, g, s) for b in QUANT_BITS for g in ("channel", "tensor") for s in (True, False)]
ACT_MODES = [QuantMode(b, "tensor", s) for b in QUANT_BITS for s in (True, False)]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _weight(c: int = 8, seed: int = 0) -> torch.Tensor:
    """Conv-like weight with channel-dependent magnitude and offset (exercises per-channel/asym)."""
    g = _gen(seed)
    mag = torch.rand(c, 1, 1, 1, generator=g) * 2 + 0.1
    return torch.randn(c, 4, 3, 3, generator=g) * mag + 0.2 * mag


def _act(seed: int = 1) -> torch.Tensor:
    return torch.randn(4, 6, 5, 5, generator=_gen(seed)) * 2 + 0.5


def _wq(modes, c: int = 8) -> LsqWeightQuantizer:
    return LsqWeightQuantizer(out_channels=c, modes=modes)


# ---------------------------------------------------------------- QuantMode


def test_mode_ranges_and_key() -> None:
    assert QuantMode(8).key == "w8_channel_sym"
    assert QuantMode(4, "tensor", False).key == "w4_tensor_asym"
    assert (QuantMode(8).qmin, QuantMode(8).qmax) == (-127, 127)
    assert (QuantMode(2).qmin, QuantMode(2).qmax) == (-1, 1)
    assert QuantMode(8, symmetric=False).weight_range() == (0, 255)
    assert QuantMode(8).act_range(unsigned=True) == (0, 255)
    assert QuantMode(8).act_range(unsigned=False) == (-128, 127)
    assert QuantMode(4, symmetric=False).act_range(unsigned=False) == (0, 15)


@pytest.mark.parametrize("bits", [1, 7, 16, 8.0, True])
def test_bad_bits_raise_naming_value_and_allowed(bits) -> None:
    with pytest.raises(ValueError) as err:
        QuantMode(bits)
    assert repr(bits) in str(err.value) and str(BITS_ALLOWED) in str(err.value)


def test_bad_granularity_raises() -> None:
    with pytest.raises(ValueError, match="granularity"):
        QuantMode(8, "row")


def test_undeclared_mode_raises_naming_it_and_declared() -> None:
    wq = _wq([QuantMode(8), QuantMode(4)])
    with pytest.raises(ValueError) as err:
        wq(_weight(), QuantMode(2))
    msg = str(err.value)
    assert "bits=2" in msg and "bits=8" in msg and "bits=4" in msg
    aq = LsqActQuantizer(modes=[QuantMode(8)], unsigned=True)
    with pytest.raises(ValueError, match="bits=4"):
        aq(_act(), QuantMode(4))
    with pytest.raises(ValueError, match="bits=4"):
        wq.frozen(QuantMode(4, "tensor"), 8)


# ---------------------------------------------------------------- forward values


@pytest.mark.parametrize("mode", WEIGHT_MODES, ids=lambda m: m.key)
def test_weight_output_on_grid_with_at_most_2b_levels(mode: QuantMode) -> None:
    wq = _wq([mode])
    w = _weight()
    out = wq(w, mode)
    s, z, qmin, qmax, axis = wq.frozen(mode, 8).quant_params()
    s = s.reshape(-1, 1, 1, 1) if axis == 0 else s
    z = z.reshape(-1, 1, 1, 1).float() if axis == 0 else z.float()
    q = out / s + z
    assert torch.allclose(q, q.round(), atol=1e-3)
    assert q.round().min() >= qmin and q.round().max() <= qmax
    rows = out.reshape(8, -1) if axis == 0 else out.reshape(1, -1)
    assert all(len(torch.unique(r)) <= 2**mode.bits for r in rows)


@pytest.mark.parametrize("mode", ACT_MODES, ids=lambda m: m.key)
@pytest.mark.parametrize("unsigned", [True, False])
def test_act_output_on_grid(mode: QuantMode, unsigned: bool) -> None:
    aq = LsqActQuantizer(modes=[mode], unsigned=unsigned)
    out = aq(_act(), mode)
    s, z, qmin, qmax, _ = aq.frozen(mode).quant_params()
    q = out / s + z
    assert torch.allclose(q, q.round(), atol=1e-3)
    assert qmin <= q.round().min() and q.round().max() <= qmax
    assert len(torch.unique(out)) <= 2**mode.bits
    if unsigned and mode.symmetric:
        assert out.min() == 0 and int(z) == 0


def test_32_bits_is_identity() -> None:
    w, x = _weight(), _act()
    wq = _wq([QuantMode(8), QuantMode(32)])
    assert wq(w, QuantMode(32)) is w
    assert wq(w, QuantMode(32, "tensor", False)) is w  # 32 bits never needs parameters
    aq = LsqActQuantizer(modes=[QuantMode(32)], unsigned=False)
    assert aq(x, QuantMode(32)) is x
    assert aq.frozen(QuantMode(32))(x) is x and wq.frozen(QuantMode(32), 8)(w) is w


@pytest.mark.parametrize("mode", WEIGHT_MODES, ids=lambda m: m.key)
def test_zero_maps_to_exact_zero(mode: QuantMode) -> None:
    wq = _wq([mode])
    w = _weight()
    w[:, 0, 0, 0] = 0.0
    assert torch.all(wq(w, mode)[:, 0, 0, 0] == 0)
    aq = LsqActQuantizer(modes=[mode], unsigned=False)
    x = _act()
    x[0, 0, 0, 0] = 0.0
    assert aq(x, mode)[0, 0, 0, 0] == 0


def test_all_zero_tensor_is_guarded() -> None:
    wq = _wq([QuantMode(4), QuantMode(4, "tensor", False)])
    for mode in wq.modes:
        out = wq(torch.zeros(8, 3), mode)
        assert torch.isfinite(out).all() and torch.all(out == 0)
        assert torch.all(wq.frozen(mode, 8).scale >= 1e-8)


# ---------------------------------------------------------------- gradients


def test_ste_gradient_inside_range_and_zero_outside() -> None:
    mode = QuantMode(4, "tensor")
    aq = LsqActQuantizer(modes=[mode], unsigned=False)
    aq(torch.tensor([-1.0, 1.0]), mode)  # init: s = 1/7, range [-8/7, 1]
    x = torch.tensor([-3.0, -0.5, 0.0, 0.3, 0.99, 2.0], requires_grad=True)
    aq(x, mode).sum().backward()
    assert torch.allclose(x.grad, torch.tensor([0.0, 1, 1, 1, 1, 0]))


GRAD_MODES = [QuantMode(4, "tensor"), QuantMode(3, "channel"), QuantMode(4, "channel", False)]


@pytest.mark.parametrize("mode", GRAD_MODES, ids=lambda m: m.key)
def test_step_gradient_matches_lsq_formula(mode: QuantMode) -> None:
    wq = _wq([mode], c=6)
    w = _weight(c=4)  # sliced: 4 of 6 channels
    wq(w, mode)
    up = torch.randn(w.shape, generator=_gen(3))
    (wq(w, mode) * up).sum().backward()
    f = wq.frozen(mode, 4)
    c = 4 if mode.granularity == "channel" else 1
    s, z = f.scale.reshape(-1, 1, 1, 1), f.zero_point.reshape(-1, 1, 1, 1)
    v = w * s.reciprocal()
    q = v.round() + z
    # LSQ: d x^/ds = round(v) - v inside the range, qmin - z / qmax - z where clipped
    d = torch.where(q < f.qmin, f.qmin - z, torch.where(q > f.qmax, f.qmax - z, v.round() - v))
    g = 1.0 / math.sqrt(w.numel() / c * f.qmax)
    expected = (d * up).reshape(c, -1).sum(1) * g
    grad = wq.step[mode.key].grad.reshape(-1)
    assert torch.allclose(grad[:c], expected, rtol=1e-4, atol=1e-6)
    assert torch.all(grad[c:] == 0)  # channels outside the subnet get no gradient
    if not mode.symmetric:  # zero point: -s * g from clipped elements only, 0 inside
        clipped = (q < f.qmin) | (q > f.qmax)
        expected_z = (-s * clipped * up).reshape(c, -1).sum(1) * g
        assert torch.allclose(wq.zero_point[mode.key].grad[:c], expected_z, rtol=1e-4, atol=1e-6)


def test_separate_parameters_per_mode() -> None:
    m8, m4 = QuantMode(8), QuantMode(4)
    wq = _wq([m8, m4])
    w = nn.Parameter(_weight())
    wq(w, m8)
    s8 = wq.step[m8.key].detach().clone()
    opt = torch.optim.SGD([*wq.parameters(), w], lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        (wq(w, m4) - 1).pow(2).mean().backward()
        opt.step()
    assert torch.equal(wq.step[m8.key], s8)
    assert wq.step[m8.key].grad is None
    assert not torch.equal(wq.step[m4.key], wq.step[m8.key])


def test_lsq_linear_model_learns() -> None:
    g = _gen(5)
    x = torch.randn(256, 8, generator=g)
    y = x @ torch.randn(8, 1, generator=g) + 0.1 * torch.randn(256, 1, generator=g)
    lin = nn.Linear(8, 1)
    nn.init.zeros_(lin.bias)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(1, 8, generator=g) * 0.1)
    wm, am = QuantMode(4, "channel", False), QuantMode(4, "tensor", False)
    wq, aq = _wq([wm], c=1), LsqActQuantizer(modes=[am], unsigned=False)
    opt = torch.optim.Adam([*lin.parameters(), *wq.parameters(), *aq.parameters()], lr=0.05)

    def loss() -> torch.Tensor:
        return (nn.functional.linear(aq(x, am), wq(lin.weight, wm), lin.bias) - y).pow(2).mean()

    first = loss().item()
    for _ in range(50):
        opt.zero_grad()
        cur = loss()
        cur.backward()
        opt.step()
    assert loss().item() < 0.3 * first


# ---------------------------------------------------------------- elastic width


def test_per_channel_slicing_uses_leading_scales() -> None:
    mode = QuantMode(4)
    wq = _wq([mode])
    w = _weight()
    full = wq(w, mode)
    assert torch.equal(wq(w[:5], mode), full[:5])
    with pytest.raises(ValueError, match="out_channels"):
        wq(_weight(c=9), mode)


def test_partial_init_then_full_width() -> None:
    mode = QuantMode(4)
    wq = _wq([mode])
    w = _weight()
    narrow = wq(w[:3], mode).sum()
    assert wq.initialized_w4_channel_sym.tolist() == [True] * 3 + [False] * 5
    with pytest.raises(RuntimeError, match="not initialised"):
        wq.frozen(mode, 8)
    s_first = wq.step[mode.key][:3].detach().clone()
    (narrow + wq(w, mode).sum()).backward()  # init between forward and backward is autograd-safe
    assert wq.initialized_w4_channel_sym.all()
    assert torch.equal(wq.step[mode.key][:3], s_first)  # not redone
    expected = 2 * w[3:].abs().amax(dim=(1, 2, 3)) / 15
    assert torch.allclose(wq.step[mode.key][3:], expected)


PERM_MODES = [QuantMode(4), QuantMode(3, "channel", False), QuantMode(4, "tensor")]


@pytest.mark.parametrize("mode", PERM_MODES, ids=lambda m: m.key)
def test_permute_channels_commutes_with_quantization(mode: QuantMode) -> None:
    wq = _wq([mode])
    w = _weight()
    with torch.no_grad():  # make the channels' parameters distinct beyond init
        wq(w, mode)
        step = wq.step[mode.key]
        step.mul_(torch.linspace(0.5, 1.5, step.numel()).reshape(step.shape))
    perm = torch.randperm(8, generator=_gen(7))
    ref = wq(w, mode)[perm]
    wq.permute_channels(perm)
    assert torch.equal(wq(w[perm], mode), ref)
    assert torch.equal(wq(w[perm][:5], mode), ref[:5])


# ---------------------------------------------------------------- frozen copies / export


@pytest.mark.parametrize("mode", WEIGHT_MODES, ids=lambda m: m.key)
def test_frozen_weight_is_bit_identical(mode: QuantMode) -> None:
    wq = _wq([mode])
    w = _weight()
    wq(w, mode)
    for c in (8, 5):
        frozen = wq.frozen(mode, c)
        assert isinstance(frozen, FrozenFakeQuant)
        assert torch.equal(frozen(w[:c]), wq(w[:c], mode))  # training mode
        wq.eval()
        with torch.no_grad():
            assert torch.equal(frozen(w[:c]), wq(w[:c], mode))
        wq.train()


@pytest.mark.parametrize("mode", ACT_MODES, ids=lambda m: m.key)
@pytest.mark.parametrize("unsigned", [True, False])
def test_frozen_act_is_bit_identical(mode: QuantMode, unsigned: bool) -> None:
    aq = LsqActQuantizer(modes=[mode], unsigned=unsigned)
    aq(_act(), mode)
    x = _act(seed=9) * 1.5  # new data, partly clipped
    frozen = aq.frozen(mode)
    assert torch.equal(frozen(x), aq(x, mode))
    with torch.no_grad():
        assert torch.equal(frozen(x), aq.eval()(x, mode))


def test_weight_quant_params_match_torch_per_channel() -> None:
    mode = QuantMode(8)
    wq = _wq([mode])
    w = _weight()
    wq(w, mode)
    scale, zp, qmin, qmax, axis = wq.frozen(mode, 6).quant_params()
    assert zp.dtype == torch.int32 and axis == 0 and (qmin, qmax) == (-127, 127)
    ref = torch.fake_quantize_per_channel_affine(w[:6], scale, zp, axis, qmin, qmax)
    assert torch.equal(wq(w[:6], mode), ref)


@pytest.mark.parametrize("mode,unsigned", [(QuantMode(8), True), (QuantMode(8, "tensor", False), False)])
def test_act_quant_params_match_torch_per_tensor(mode: QuantMode, unsigned: bool) -> None:
    aq = LsqActQuantizer(modes=[mode], unsigned=unsigned)
    x = _act()
    aq(x, mode)
    scale, zp, qmin, qmax, axis = aq.frozen(mode).quant_params()
    assert axis is None and (qmin, qmax) == (0, 255)
    # exact ties x = (k + 0.5) * s are included: both sides must round half to even
    xs = torch.cat([x.flatten(), (torch.arange(-20, 20) + 0.5) * scale])
    ref = torch.fake_quantize_per_tensor_affine(xs, scale, zp, qmin, qmax)
    assert torch.equal(aq(xs, mode), ref)


def test_identity_frozen_has_no_quant_params() -> None:
    with pytest.raises(ValueError, match="32-bit"):
        FrozenFakeQuant.identity().quant_params()


# ---------------------------------------------------------------- state_dict


def _roundtrip(module: nn.Module) -> dict:
    buf = io.BytesIO()
    torch.save(module.state_dict(), buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def test_state_dict_roundtrip_keeps_init_flags() -> None:
    modes = [QuantMode(8), QuantMode(4, "tensor", False)]
    wq, aq = _wq(modes), LsqActQuantizer(modes=modes, unsigned=True)
    w, x = _weight(), _act()
    for m in modes:
        wq(w, m), aq(x, m)
    wq2, aq2 = _wq(modes), LsqActQuantizer(modes=modes, unsigned=True)
    wq2.load_state_dict(_roundtrip(wq))
    aq2.load_state_dict(_roundtrip(aq))
    assert "initialized_w8_channel_sym" in wq.state_dict() and "zero_point.w4_tensor_asym" in wq.state_dict()
    other_w, other_x = _weight(seed=4) * 3, _act(seed=4) * 3  # would give different inits if redone
    for m in modes:
        assert torch.equal(wq2(other_w, m), wq(other_w, m))
        assert torch.equal(aq2(other_x, m), aq(other_x, m))


def test_reset_init_reinitialises() -> None:
    mode = QuantMode(4, "tensor")
    aq = LsqActQuantizer(modes=[mode], unsigned=True)
    aq(_act(), mode)
    s = aq.step["a4_sym"].detach().clone()
    aq(_act() * 10, mode)
    assert torch.equal(aq.step["a4_sym"], s)
    aq.reset_init(mode)
    aq(_act() * 10, mode)
    assert torch.allclose(aq.step["a4_sym"], s * 10)


# ---------------------------------------------------------------- autocast (bf16 / fp16)

AUTOCAST_MODES = [QuantMode(8, "tensor", False), QuantMode(8), QuantMode(4, "channel", False), QuantMode(6, "tensor")]


def _bf16_autocast():
    return torch.autocast("cpu", dtype=torch.bfloat16)


def _grads(quantizer: nn.Module, x: torch.Tensor, mode: QuantMode, up: torch.Tensor, autocast: bool):
    """(output, input grad, step grad, zero-point grad) of ``(q(x) * up).sum()``, optionally under bf16 autocast."""
    quantizer.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_()
    if autocast:
        with _bf16_autocast():
            out = quantizer(x, mode)
    else:
        out = quantizer(x, mode)
    (out.float() * up).sum().backward()
    key = next(iter(quantizer.step.keys()))
    zp = quantizer.zero_point[key].grad if key in quantizer.zero_point else None
    return out, x.grad, quantizer.step[key].grad.clone(), None if zp is None else zp.clone()


@pytest.mark.parametrize("mode", AUTOCAST_MODES, ids=lambda m: m.key)
@pytest.mark.parametrize("kind", ["weight", "act"])
def test_fake_quant_under_autocast_equals_fp32(mode: QuantMode, kind: str) -> None:
    """fp32 input inside bf16 autocast: output and every gradient equal the fp32 computation."""
    q = _wq([mode]) if kind == "weight" else LsqActQuantizer(modes=[mode], unsigned=False)
    x = _weight() if kind == "weight" else _act()
    q(x, mode)
    up = torch.randn(x.shape, generator=_gen(11))
    ref, auto = _grads(q, x, mode, up, autocast=False), _grads(q, x, mode, up, autocast=True)
    assert auto[0].dtype == torch.float32 and torch.equal(auto[0], ref[0])
    for a, b in zip(auto[1:], ref[1:]):
        assert (a is None and b is None) or torch.equal(a, b)


@pytest.mark.parametrize("mode", AUTOCAST_MODES, ids=lambda m: m.key)
def test_bf16_activations_are_quantized_in_fp32(mode: QuantMode) -> None:
    """bf16 input (what an autocast conv emits): quantized in fp32, returned in bf16, same step gradient."""
    aq = LsqActQuantizer(modes=[mode], unsigned=False)
    x16 = (_act() * 3).bfloat16()
    aq(x16.float(), mode)
    up = torch.randn(x16.shape, generator=_gen(12)).bfloat16().float()  # representable in bf16: exact upstream
    ref = _grads(aq, x16.float(), mode, up, autocast=False)
    out, x_grad, s_grad, z_grad = _grads(aq, x16, mode, up, autocast=True)
    assert out.dtype == torch.bfloat16 and torch.equal(out, ref[0].bfloat16())
    assert torch.allclose(s_grad, ref[2], rtol=1e-6, atol=0) and torch.equal(x_grad, ref[1].bfloat16())
    assert (z_grad is None and ref[3] is None) or torch.allclose(z_grad, ref[3], rtol=1e-6, atol=0)
    # The test can fail: rounding x/s in bf16 itself lands a good share of values on other levels.
    s = aq.frozen(mode).scale
    naive = torch.round(x16 * s.reciprocal())  # bf16 arithmetic (0-dim fp32 step does not promote)
    assert naive.dtype == torch.bfloat16 and (naive.float() != torch.round(x16.float() * s.reciprocal())).any()


def test_frozen_fake_quant_under_autocast() -> None:
    mode = QuantMode(8, "tensor", False)
    aq = LsqActQuantizer(modes=[mode], unsigned=False)
    x16 = (_act() * 3).bfloat16()
    aq(x16.float(), mode)
    frozen = aq.frozen(mode)
    with torch.no_grad(), _bf16_autocast():
        out = frozen(x16)
    assert out.dtype == torch.bfloat16 and torch.equal(out, frozen(x16.float()).bfloat16())


def test_load_state_dict_forgets_known_initialisation() -> None:
    mode = QuantMode(4, "tensor")
    aq = LsqActQuantizer(modes=[mode], unsigned=True)
    aq(_act(), mode)  # initialised (and remembered on the host)
    aq.load_state_dict(LsqActQuantizer(modes=[mode], unsigned=True).state_dict())  # flags back to False
    aq(_act() * 10, mode)
    assert aq.initialized_a4_sym.item() and aq.step["a4_sym"].item() > 1.0  # re-initialised from the new data


def test_compile_fake_quant_routes_every_quantizer() -> None:
    from supernets.quant import compile_fake_quant

    calls: list[str] = []

    def fake_compile(kernel):
        def run(*args):
            calls.append(kernel.__name__)
            return kernel(*args)
        return run

    model = nn.ModuleDict({"w": _wq([QuantMode(4)]), "a": LsqActQuantizer(modes=[QuantMode(4)], unsigned=False)})
    w, x = _weight(), _act()
    ref = (model["w"](w, QuantMode(4)), model["a"](x, QuantMode(4)))
    compile_fake_quant(model, fake_compile)
    got = (model["w"](w, QuantMode(4)), model["a"](x, QuantMode(4)))
    assert calls == ["_weight_kernel", "_act_kernel"] and all(torch.equal(a, b) for a, b in zip(ref, got))
    compile_fake_quant(model, None)
    model["w"](w, QuantMode(4))
    assert len(calls) == 2


def test_attach_lsq_is_the_supernets_own_fake_quantization() -> None:
    """The static QAT reference computes what the supernet's largest W8A8 subnet computes (same init data)."""
    from search_spaces import get_space
    from supernets.static import attach_lsq
    from supernets.supernet import QuantSupernet

    space = get_space("resnet", in_channels=3, image_size=8, stem_channels=8, stage_channels=[8, 16],
                      stage_strides=[1, 2], depths=[1, 2], expands=[0.5, 1.0], width_mults=[1.0], w_bits=[4, 8],
                      a_bits=[4, 8])
    net = QuantSupernet(space, image_size=8).train()
    largest = space.largest()  # 8-bit everywhere
    static = attach_lsq(net.extract(largest, quantize=False).train(), w_mode=QuantMode(8), a_mode=QuantMode(
        8, "tensor", False))
    x = torch.randn(16, 3, 8, 8, generator=_gen(2))
    ref, got = net.run(x, largest), static(x)  # both initialise their steps lazily from x
    assert torch.allclose(got, ref, rtol=1e-5, atol=1e-5)
    assert sum(isinstance(m, LsqWeightQuantizer) for m in static.modules()) == sum(
        1 for m in static.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
