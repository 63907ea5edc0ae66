"""DPO, conservative DPO and IPO: the losses and their gradients by hand, the closed-form optimum they converge to, and
what a run logs; the Bradley-Terry reward model's loss and what it recovers."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from helpers import smoke_settings

from algorithms.common import RecordingLogger
from algorithms.dpo import Config, dpo_loss, implicit_reward, ipo_loss, preference_margin, train


def log_probs(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64, requires_grad=True)


def test_the_losses_and_their_gradients_by_hand():
    # One pair: log pi(y_w) = -1, log pi(y_l) = -2, pi_ref gives both -1.5, so h = 0.5 - (-0.5) = 1.
    chosen, rejected = log_probs(-1.0), log_probs(-2.0)
    ref = torch.tensor([-1.5], dtype=torch.float64)
    margin = preference_margin(chosen, rejected, ref, ref)
    assert margin.item() == pytest.approx(1.0)

    # DPO, beta 0.5: -log sigmoid(0.5) = log(1 + e^-0.5); d/d log pi(y_w) = -beta sigmoid(-beta h), on y_l the opposite.
    loss = dpo_loss(margin, beta=0.5)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-0.5)))
    loss.sum().backward()
    slope = 0.5 / (1 + math.exp(0.5))
    assert chosen.grad.item() == pytest.approx(-slope) and rejected.grad.item() == pytest.approx(slope)

    # Conservative DPO, eps 0.1: 0.9 log(1 + e^-0.5) + 0.1 log(1 + e^0.5). Its slope in h is beta (sigmoid(beta h) - 1
    # + eps): it stops pushing at sigmoid(beta h) = 1 - eps, a finite margin, where DPO pushes for ever.
    smoothed = dpo_loss(torch.tensor([1.0]), beta=0.5, label_smoothing=0.1)
    assert smoothed.item() == pytest.approx(0.9 * math.log(1 + math.exp(-0.5)) + 0.1 * math.log(1 + math.exp(0.5)))
    for h, eps in ((3.0, 0.5), (3.0, 0.1), (2 * math.log(9), 0.1)):
        margin = torch.tensor([h], dtype=torch.float64, requires_grad=True)
        dpo_loss(margin, beta=0.5, label_smoothing=eps).sum().backward()
        assert margin.grad.item() == pytest.approx(0.5 * (1 / (1 + math.exp(-0.5 * h)) - 1 + eps), abs=1e-12)
    assert margin.grad.item() == pytest.approx(0.0, abs=1e-12)  # sigmoid(log 9) = 0.9 = 1 - eps

    # IPO, tau 0.25: (h - 1 / (2 tau))^2 = (h - 2)^2; at h = 3 it is 1 with slope 2 (h - 2) = 2 on log pi(y_w).
    chosen, rejected = log_probs(-1.0), log_probs(-4.0)
    zero = torch.zeros(1, dtype=torch.float64)
    loss = ipo_loss(preference_margin(chosen, rejected, zero, zero), beta=0.25)
    assert loss.item() == pytest.approx(1.0)
    loss.sum().backward()
    assert chosen.grad.item() == pytest.approx(2.0) and rejected.grad.item() == pytest.approx(-2.0)

    assert implicit_reward(torch.tensor([-1.0]), torch.tensor([-3.0]), beta=0.1).item() == pytest.approx(0.2)


def test_dpo_converges_to_the_closed_form_optimum_on_an_enumerable_completion_set():
    """One prompt, 8 completions, a softmax policy over them: minimising the expected DPO loss over every pair, labelled
    by Bradley-Terry on r, gives pi*(y) proportional to pi_ref(y) exp(r(y) / beta) (DPO eq. 4 and its Theorem 1)."""
    generator = torch.Generator().manual_seed(0)
    reward = torch.randn(8, generator=generator, dtype=torch.float64)
    log_ref = torch.log_softmax(torch.randn(8, generator=generator, dtype=torch.float64), 0)
    beta = 0.5
    pairs = torch.tensor(list(itertools.permutations(range(8), 2)))  # (56, 2): ordered (y_1, y_2)
    first, second = pairs[:, 0], pairs[:, 1]
    p_first = torch.sigmoid(reward[first] - reward[second])  # the teacher's probability of preferring y_1

    logits = log_ref.clone().requires_grad_(True)  # the policy starts at pi_ref, as DPO's does
    optimizer = torch.optim.Adam([logits], lr=0.05)
    for _ in range(3000):
        log_pi = torch.log_softmax(logits, 0)
        margin = preference_margin(log_pi[first], log_pi[second], log_ref[first], log_ref[second])
        # The expected loss over the teacher's labels: y_1 chosen with p_first, else y_2 (margin negated).
        loss = (p_first * dpo_loss(margin, beta) + (1 - p_first) * dpo_loss(-margin, beta)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    closed_form = torch.softmax(log_ref + reward / beta, 0)
    assert torch.allclose(torch.softmax(logits.detach(), 0), closed_form, atol=1e-4)
    assert not torch.allclose(torch.exp(log_ref), closed_form, atol=1e-2)  # far from where it started


def test_a_transformer_policy_trained_by_dpo_reaches_the_closed_form_optimum():
    """The same on a causal transformer: one prompt, every completion of 2 tokens out of 3 words (9), the policy a tiny
    GPT-2 whose sequence probability is the product of its token probabilities (`sequence_log_prob`, as the runs use
    it), pi_ref a frozen copy of its initialisation. The expected DPO loss over all ordered pairs drives it to
    pi_ref(y) exp(r(y) / beta) / Z over the 9 completions."""
    from algorithms.common.language_models import sequence_log_prob, tiny_gpt2

    torch.manual_seed(0)
    words, prompt = 3, torch.tensor([[0, 1]])
    completions = torch.tensor(list(itertools.product(range(words), repeat=2)))  # (9, 2)
    ids = torch.cat([prompt.expand(len(completions), -1), completions], 1)  # (9, 4)
    policy = tiny_gpt2(words, 4, n_embd=32, n_layer=1, n_head=2)
    reference = tiny_gpt2(words, 4, n_embd=32, n_layer=1, n_head=2)
    reference.load_state_dict(policy.state_dict())
    log_ref = sequence_log_prob(reference, ids, torch.ones_like(ids), 2).detach()  # (9,)
    assert torch.exp(log_ref).sum().item() == pytest.approx(1.0, abs=1e-5)  # the 9 are every completion
    reward, beta = torch.randn(len(completions)), 0.5
    pairs = torch.tensor(list(itertools.permutations(range(len(completions)), 2)))  # (72, 2)
    first, second = pairs[:, 0], pairs[:, 1]
    p_first = torch.sigmoid(reward[first] - reward[second])

    optimizer = torch.optim.Adam(policy.parameters(), lr=3e-3)
    for _ in range(600):
        log_pi = sequence_log_prob(policy, ids, torch.ones_like(ids), 2)
        margin = preference_margin(log_pi[first], log_pi[second], log_ref[first], log_ref[second])
        loss = (p_first * dpo_loss(margin, beta) + (1 - p_first) * dpo_loss(-margin, beta)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    closed_form = torch.softmax(log_ref + reward / beta, 0)
    learned = torch.exp(sequence_log_prob(policy, ids, torch.ones_like(ids), 2).detach())
    assert torch.allclose(learned, closed_form, atol=2e-3), (learned, closed_form)
    assert not torch.allclose(torch.exp(log_ref), closed_form, atol=5e-2)  # far from where it started


@pytest.mark.parametrize(("algo", "first_loss"), [("dpo", math.log(2)), ("ipo", (1 / (2 * 0.1)) ** 2)])
def test_the_first_update_sees_the_policy_equal_to_pi_ref(algo, first_loss):
    """Before its first step the policy is pi_ref: every implicit reward is 0, DPO's loss is log 2 and IPO's
    (1 / (2 beta))^2, whatever the pairs. That the run logs exactly these shows its reference log-probabilities are
    pi_ref's of the same completions and its rewards/* are beta log(pi / pi_ref)."""
    from experiments.registry import load_algorithm

    cfg = load_algorithm(algo).Config(**{**smoke_settings(algo), "total_timesteps": 1, "eval_every": 0, "beta": 0.1})
    logger = RecordingLogger()
    train(cfg, logger)
    (logged,) = [m for _, m in logger.records if "losses/loss" in m]
    assert logged["losses/loss"] == pytest.approx(first_loss, rel=1e-6)
    assert logged["rewards/chosen"] == logged["rewards/rejected"] == logged["rewards/margin"] == 0.0
    assert logged["rewards/accuracy"] == 0.0


def test_bad_settings_are_refused_before_anything_runs():
    for bad in ({"beta": 0.0}, {"loss": "hinge"}, {"label_smoothing": 0.5}, {"loss": "ipo", "label_smoothing": 0.1}):
        with pytest.raises(ValueError):
            Config(**bad)
    with pytest.raises(ValueError, match="sft_run is needed: the run directory of a finished sft run"):
        train(Config(total_timesteps=1))


def test_the_bradley_terry_reward_model_recovers_the_true_reward_differences():
    """20,000 pairs of 6 completions labelled by Bradley-Terry on r: the maximum-likelihood fit of one score per
    completion under the reward model's loss recovers r up to a constant."""
    from algorithms.reward_model import bradley_terry_loss

    assert bradley_terry_loss(torch.tensor([2.0]), torch.tensor([1.0])).item() == pytest.approx(math.log(1 + math.exp(-1)))
    generator = torch.Generator().manual_seed(1)
    reward = torch.randn(6, generator=generator, dtype=torch.float64)
    first, second = torch.randint(6, (20_000,), generator=generator), torch.randint(6, (20_000,), generator=generator)
    prefer_first = torch.rand(20_000, generator=generator, dtype=torch.float64) < torch.sigmoid(reward[first] - reward[second])
    chosen, rejected = torch.where(prefer_first, first, second), torch.where(prefer_first, second, first)
    scores = torch.zeros(6, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.Adam([scores], lr=0.05)
    for _ in range(1500):
        loss = bradley_terry_loss(scores[chosen], scores[rejected]).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    fitted = scores.detach()
    assert torch.allclose(fitted - fitted.mean(), reward - reward.mean(), atol=0.08)


def test_rlhf_ppo_rewards_are_the_kl_penalty_at_every_token_and_the_score_at_the_last():
    from algorithms.rlhf_ppo import per_token_rewards

    log_pi = torch.tensor([[-1.0, -2.0, -0.5], [-0.2, -0.2, -0.2]])
    log_ref = torch.tensor([[-1.5, -1.0, -0.5], [-0.7, -0.2, -1.2]])
    rewards = per_token_rewards(log_pi, log_ref, torch.tensor([3.0, -1.0]), kl_coef=0.1)
    # -0.1 * (log pi - log pi_ref) per token; the score added at the last token only.
    expected = torch.tensor([[-0.05, 0.1, 0.0 + 3.0], [-0.05, 0.0, -0.1 - 1.0]])
    assert torch.allclose(rewards, expected)
    # Summed over a completion: the score minus beta times the sequence's log-ratio, KL's one-sample estimate.
    assert torch.allclose(rewards.sum(1), torch.tensor([3.0, -1.0]) - 0.1 * (log_pi - log_ref).sum(1))
