"""v-DropPath regulariser: closed-form values, saturation, gradient direction."""

from __future__ import annotations

import math

import pytest
import torch

from fusion3d.models.regularizer import reg_coefficient, template_regularizer, vdroppath_regularizer
from fusion3d.models.spec import ModelConfig
from fusion3d.models.template import build_model


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def _closed_form(ps, w2s, coef, n):
    return sum(
        coef * (1 - p) * w + (p * math.log(p) + (1 - p) * math.log(1 - p)) / n for p, w in zip(ps, w2s)
    )


@pytest.mark.parametrize("form", ["code", "paper"])
def test_values_match_closed_form(form):
    ps, w2s, k, n = [0.1, 0.7], [2.0, 5.0], 10.0, 100
    coef = k / n if form == "code" else k * k / (2 * n)
    assert reg_coefficient(k, n, form) == pytest.approx(coef)
    logits = torch.tensor([_logit(p) for p in ps], dtype=torch.float64)
    val = vdroppath_regularizer(logits, torch.tensor(w2s, dtype=torch.float64), k, n, form)
    assert val.item() == pytest.approx(_closed_form(ps, w2s, coef, n), rel=1e-12)
    # hand numbers for the code form: 0.1*(0.9*2 + 0.3*5) + (-0.325083 - 0.610864)/100
    if form == "code":
        assert val.item() == pytest.approx(0.33 - 0.00935947, abs=1e-7)


def test_default_form_is_code():
    logits, w2 = torch.tensor([0.3]), torch.tensor([4.0])
    assert vdroppath_regularizer(logits, w2, 7.0, 50) == vdroppath_regularizer(logits, w2, 7.0, 50, "code")
    with pytest.raises(ValueError):
        vdroppath_regularizer(logits, w2, 7.0, 50, "other")
    with pytest.raises(ValueError):
        vdroppath_regularizer(logits, w2, 7.0, 0)


def test_finite_at_saturated_logits():
    logits = torch.tensor([1e4, -1e4, 0.0], requires_grad=True)
    w2 = torch.tensor([3.0, 3.0, 3.0], requires_grad=True)
    val = vdroppath_regularizer(logits, w2, 10.0, 100)
    assert torch.isfinite(val)
    # p = 1: nothing; p = 0: coef * ||W||^2; p = 0.5: coef * 0.5 * ||W||^2 - log(2) / N
    assert val.item() == pytest.approx(0.1 * 3.0 + 0.1 * 0.5 * 3.0 - math.log(2) / 100, rel=1e-6)
    val.backward()
    assert torch.isfinite(logits.grad).all() and torch.isfinite(w2.grad).all()
    for form in ("code", "paper"):
        lg = torch.full((4,), 1e4, requires_grad=True)
        v = vdroppath_regularizer(torch.cat([lg, -lg]), torch.ones(8), 250.0, 10, form)
        v.backward()
        assert torch.isfinite(v) and torch.isfinite(lg.grad).all()


def test_large_k_gradient_step_increases_drop_prob():
    logits = torch.tensor([_logit(0.1), _logit(0.3)], requires_grad=True)
    w2 = torch.tensor([1.0, 2.0])
    before = torch.sigmoid(logits).detach().clone()
    opt = torch.optim.SGD([logits], lr=1.0)
    vdroppath_regularizer(logits, w2, 1000.0, 100).backward()
    assert (logits.grad < 0).all()
    opt.step()
    assert (torch.sigmoid(logits) > before).all()


def test_template_regularizer_reaches_logits_and_weights():
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="tiny", blocks=[1, 1]), 3)
    val = template_regularizer(model, 50.0, 200)
    pairs = model.gated_weights()
    assert len(pairs) == 2 * model.num_slots
    manual = sum(0.25 * torch.sigmoid(-lg) * w.pow(2).sum() for lg, w in pairs)
    p = 0.1
    manual = manual + len(pairs) * (p * math.log(p) + (1 - p) * math.log(1 - p)) / 200
    assert val.item() == pytest.approx(float(manual.detach()), rel=1e-5)
    val.backward()
    for lg, w in pairs:
        assert lg.grad is not None and lg.grad.item() < 0  # the weight term pushes p up
        assert w.grad is not None and w.grad.abs().sum() > 0


def test_calibrated_k_solves_for_the_pull_ratio_in_both_forms():
    from fusion3d.models.regularizer import calibrated_k, weight_term_pull

    # code form: pull(k) = k * unit -> k = fraction * ce / unit
    assert calibrated_k(0.3, 0.01, 0.5, "code") == pytest.approx(15.0)
    # paper form: pull(k) = k^2 / 2 * unit -> k = sqrt(2 * fraction * ce / unit)
    assert calibrated_k(0.3, 0.01, 0.5, "paper") == pytest.approx(30.0**0.5)
    with pytest.raises(ValueError):
        calibrated_k(0.0, 0.01, 0.5)
    # the unit pull is the logit-gradient magnitude of the weight term at coefficient 1 / N
    logits = torch.tensor([0.3, -1.2], requires_grad=True)
    norms = torch.tensor([2.0, 5.0])
    (torch.sigmoid(-logits) * norms / 7).sum().backward()
    assert torch.allclose(weight_term_pull(logits.detach(), norms, 7), logits.grad.abs())
