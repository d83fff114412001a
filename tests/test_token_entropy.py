"""The rollout's per-token entropy (`token_stats`) in float32: never negative, finite with masked logits."""

import math

import pytest
import torch

from searchgym.agent.rollout import token_stats


def reference(logits: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """log p and H = -sum p log p in float64, masked (-inf) entries left out."""
    z = logits.double() / (temperature if temperature > 0 else 1.0)
    logp = torch.log_softmax(z, dim=-1)
    p = logp.exp()
    return logp, torch.where(p > 0, -p * logp, torch.zeros_like(p)).sum(-1)


@pytest.mark.parametrize("peak", [1e4, 1e3, 100.0, 50.0])
def test_peaked_logits_give_zero_entropy_not_a_negative_one(peak):
    logits = torch.zeros(3, 32_000, dtype=torch.float32)
    logits[:, 7] = peak
    logprob, h = token_stats(logits, torch.tensor([7, 7, 7]), temperature=1.0)
    assert (h >= 0).all() and torch.isfinite(h).all()
    assert h.max().item() == pytest.approx(reference(logits, 1.0)[1].max().item(), abs=1e-6)
    assert h.max().item() < 1e-12  # at most 32,000 * 50 * e^-50 ~ 3e-16
    assert logprob.abs().max().item() < 1e-6


@pytest.mark.parametrize("offset", [1000.0, -1000.0, 5000.0])
def test_peaked_logits_far_from_zero_stay_non_negative(offset):
    # The old logsumexp(z) - sum softmax(z) * z cancelled two numbers near `offset` in float32 and gave
    # H down to -0.05 here; the reference sees the same float32 logits in float64.
    torch.manual_seed(0)
    logits = torch.randn(256, 32_000) * 2 + offset
    logits[:, 0] = offset + 20
    _, h = token_stats(logits, torch.zeros(256, dtype=torch.long), temperature=1.0)
    assert (h >= 0).all()
    assert h.double().tolist() == pytest.approx(reference(logits, 1.0)[1].tolist(), abs=1e-3)


def test_half_precision_peaked_logits_are_never_negative():
    logits = torch.randn(64, 1000, dtype=torch.bfloat16) * 30
    logits[:, 0] = 300
    _, h = token_stats(logits, torch.zeros(64, dtype=torch.long), temperature=0.7)
    assert (h >= 0).all()


def test_masked_logits_give_the_entropy_over_the_finite_entries():
    finite = torch.tensor([[1.5, -0.3, 0.2, 2.0, -1.0]])
    masked = torch.full((1, 9), -math.inf)
    masked[0, [0, 2, 4, 6, 8]] = finite[0]
    for t in (1.0, 0.6, 0.0):
        logprob, h = token_stats(masked, torch.tensor([4]), temperature=t)
        expected_lp, expected_h = token_stats(finite, torch.tensor([2]), temperature=t)
        assert torch.isfinite(h).all() and torch.isfinite(logprob).all()
        assert h.item() == pytest.approx(expected_h.item(), abs=1e-6)
        assert logprob.item() == pytest.approx(expected_lp.item(), abs=1e-6)
        assert h.item() == pytest.approx(reference(finite, t)[1].item(), abs=1e-5)


def test_a_single_finite_logit_has_zero_entropy():
    logits = torch.tensor([[-math.inf, 3.0, -math.inf]])
    logprob, h = token_stats(logits, torch.tensor([1]), temperature=1.0)
    assert h.item() == 0.0 and logprob.item() == 0.0


@pytest.mark.parametrize("vocab", [2, 4, 151_936])
def test_uniform_logits_give_log_v(vocab):
    _, h = token_stats(torch.full((2, vocab), 3.25), torch.tensor([0, 1]), temperature=0.8)
    assert h.tolist() == pytest.approx([math.log(vocab)] * 2, rel=1e-5)


@pytest.mark.parametrize("temperature", [0.0, 0.3, 1.0, 1.7])
def test_temperature_scaling_matches_a_float64_reference(temperature):
    torch.manual_seed(0)
    logits = torch.randn(16, 2048) * 4
    tokens = torch.randint(0, 2048, (16,))
    logprob, h = token_stats(logits, tokens, temperature)
    ref_logp, ref_h = reference(logits, temperature)
    assert h.double().tolist() == pytest.approx(ref_h.tolist(), abs=1e-4)
    assert logprob.double().tolist() == pytest.approx(ref_logp.gather(-1, tokens[:, None])[:, 0].tolist(), abs=1e-4)
    if temperature not in (0.0, 1.0):  # greedy decoding (T = 0) scores the unscaled distribution
        assert not torch.allclose(h, token_stats(logits, tokens, 1.0)[1])
    assert torch.equal(token_stats(logits, tokens, 0.0)[1], token_stats(logits, tokens, 1.0)[1])
