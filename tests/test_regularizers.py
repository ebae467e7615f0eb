"""Regularisers checked against hand values, analytic gradients and finite differences."""
import pytest
import torch
import torch.nn as nn

from landscape.regularizers import advlc, input_gradient_penalty


def test_advlc_is_zero_when_logits_equal():
    logits = torch.randn(5, 10, generator=torch.Generator().manual_seed(0))
    assert advlc(logits, logits.clone()).item() == 0.0


def test_advlc_hand_example_2x3():
    clean = torch.tensor([[1.0, 2.0, 3.0], [0.0, -1.0, 4.0]])
    adv = torch.tensor([[1.5, 0.0, 3.0], [3.0, -1.0, 3.0]])
    # |diff| = [[0.5, 2, 0], [3, 0, 1]]; B*K = 6.
    # top=0.5 -> k=3: 3 + 2 + 1 = 6, / B=2 -> 3.0
    assert advlc(clean, adv, top=0.5).item() == pytest.approx(3.0)
    # top=0.1 -> k=int(0.6)=0 -> at least 1: the largest entry 3 / 2 = 1.5
    assert advlc(clean, adv, top=0.1).item() == pytest.approx(1.5)
    # top=1 -> every entry: 6.5 / 2
    assert advlc(clean, adv, top=1.0).item() == pytest.approx(3.25)


def test_advlc_selects_over_the_whole_batch_not_per_sample():
    clean = torch.zeros(2, 5)
    adv = torch.tensor([[9.0, 8.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0, 0.0]])
    # k = int(0.2 * 10) = 2: both from sample 0 -> (9 + 8) / 2 ; a per-sample top-1 would give (9 + 1) / 2.
    assert advlc(clean, adv, top=0.2).item() == pytest.approx(8.5)


def test_advlc_gradient_flows_to_the_selected_entries():
    clean = torch.tensor([[0.0, 0.0, 0.0]], requires_grad=True)
    adv = torch.tensor([[2.0, -5.0, 1.0]], requires_grad=True)
    advlc(clean, adv, top=0.5).backward()  # k = 1: entry 1 (|-5|)
    assert adv.grad.tolist() == [[0.0, -1.0, 0.0]]
    assert clean.grad.tolist() == [[0.0, 1.0, 0.0]]


@pytest.mark.parametrize("bad", [0, 0.0, -0.1, 1.5, True, "0.1"])
def test_advlc_rejects_bad_top(bad):
    with pytest.raises(ValueError, match="top"):
        advlc(torch.zeros(2, 3), torch.ones(2, 3), top=bad)


def test_advlc_rejects_bad_shapes_and_types():
    with pytest.raises(ValueError, match="same shape"):
        advlc(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"\(B, K\)"):
        advlc(torch.zeros(6), torch.zeros(6))
    with pytest.raises(TypeError, match="logits_adv"):
        advlc(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long))


def _linear_model(seed=0, d=4, k=3):
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(d, k).double()
    with torch.no_grad():
        lin.weight.copy_(torch.randn(k, d, generator=g, dtype=torch.double))
        lin.bias.copy_(torch.randn(k, generator=g, dtype=torch.double))
    return nn.Sequential(nn.Flatten(), lin), lin


@pytest.mark.parametrize("norm", ["l1", "l2sq"])
def test_gradient_penalty_on_linear_model_matches_analytic(norm):
    model, lin = _linear_model()
    x = torch.rand(6, 4, generator=torch.Generator().manual_seed(1), dtype=torch.double)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    # d CE / dx = sum_k p_k W_k - W_y for f(x) = W x + b.
    W = lin.weight.detach()
    p = torch.softmax(x @ W.T + lin.bias.detach(), dim=1)
    g = p @ W - W[y]
    expected = g.abs().sum(1).mean() if norm == "l1" else g.pow(2).sum(1).mean()
    got = input_gradient_penalty(model, x, y, norm=norm)
    assert got.item() == pytest.approx(expected.item(), rel=1e-10)


def test_gradient_penalty_is_differentiable_in_the_parameters():
    """Double backprop: d penalty / d bias matches central finite differences."""
    model, lin = _linear_model(seed=2)
    x = torch.rand(5, 4, generator=torch.Generator().manual_seed(3), dtype=torch.double)
    y = torch.tensor([2, 0, 1, 1, 0])
    input_gradient_penalty(model, x, y, norm="l2sq").backward()
    analytic = lin.bias.grad.clone()
    h = 1e-6
    numeric = torch.zeros_like(analytic)
    with torch.no_grad():
        for j in range(analytic.numel()):
            lin.bias[j] += h
            up = input_gradient_penalty(model, x, y, norm="l2sq").item()
            lin.bias[j] -= 2 * h
            down = input_gradient_penalty(model, x, y, norm="l2sq").item()
            lin.bias[j] += h
            numeric[j] = (up - down) / (2 * h)
    assert torch.allclose(analytic, numeric, rtol=1e-5, atol=1e-8)
    assert analytic.abs().max() > 1e-4  # not trivially zero


def test_gradient_penalty_keeps_mode_and_input():
    model, _ = _linear_model()
    model.eval()
    x = torch.rand(3, 4, dtype=torch.double)
    x0 = x.clone()
    input_gradient_penalty(model, x, torch.tensor([0, 1, 2]))
    assert not model.training
    assert x.grad is None and torch.equal(x, x0)


def test_gradient_penalty_rejects_bad_arguments():
    model, _ = _linear_model()
    x = torch.rand(3, 4, dtype=torch.double)
    with pytest.raises(ValueError, match="l1, l2sq"):
        input_gradient_penalty(model, x, torch.tensor([0, 1, 2]), norm="l2")
    with pytest.raises(ValueError, match="out of range"):
        input_gradient_penalty(model, x, torch.tensor([0, 1, 3]))
    with pytest.raises(ValueError, match="labels"):
        input_gradient_penalty(model, x, torch.tensor([0, 1]))


def _official_advlc(clean, adv, top):
    """Independent re-implementation from the official code's description: k = int(numel * top) entries of
    |clean - adv| over the whole batch (or the full L1 norm when top == 1), summed, divided by the batch size."""
    b = clean.shape[0]
    if top == 1:
        return (clean - adv).abs().sum().item() / b
    diff = sorted((clean - adv).abs().flatten().tolist(), reverse=True)
    return sum(diff[:int(len(diff) * top)]) / b


@pytest.mark.parametrize("b, k, top", [(128, 10, 0.1), (100, 10, 0.1), (7, 3, 0.5), (32, 100, 0.05), (5, 10, 1.0)])
def test_advlc_equals_the_official_formula(b, k, top):
    g = torch.Generator().manual_seed(b * k)
    clean, adv = torch.randn(b, k, generator=g), torch.randn(b, k, generator=g)
    assert advlc(clean, adv, top=top).item() == pytest.approx(_official_advlc(clean, adv, top), rel=1e-5)


def test_loss_and_gradient_penalty_share_one_forward():
    from landscape.regularizers import loss_and_gradient_penalty

    lin, _ = _linear_model()
    x = torch.rand(6, 4, generator=torch.Generator().manual_seed(1), dtype=torch.double)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    loss, pen = loss_and_gradient_penalty(lin, x, y, norm="l1")
    assert loss.item() == pytest.approx(torch.nn.functional.cross_entropy(lin(x), y).item(), rel=1e-12)
    assert pen.item() == pytest.approx(input_gradient_penalty(lin, x, y, norm="l1").item(), rel=1e-12)
