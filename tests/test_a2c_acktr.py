"""A2C and ACKTR: n-step returns and the A2C loss against slow references; K-FAC's Kronecker factors against the
explicit Fisher blocks they approximate; the damped natural gradient and the trust region against dense algebra."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from algorithms import a2c, acktr
from algorithms.acktr import KFAC, conv_factors, kfac_precondition, linear_factors, trust_region_step_size
from algorithms.common.policy_gradient import a2c_loss, compute_gae


@pytest.fixture
def float64():
    """Exact comparisons in double precision (restored afterwards: other tests build float32 networks)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


# --- A2C ---------------------------------------------------------------------------------------------
def nstep_reference(rewards, values, next_values, terminated, ends, gamma):
    """R_t = r_t + gamma r_{t+1} + ... up to the rollout's end or the episode's end, then + gamma^k V(s_{t+k}):
    V of the next rollout state at the rollout's end, V(true final obs) at a truncation, 0 at a termination."""
    T, N = rewards.shape
    out = np.zeros((T, N))
    for n in range(N):
        for t in range(T):
            total, discount = 0.0, 1.0
            for k in range(t, T):
                total += discount * rewards[k, n]
                discount *= gamma
                if ends[k, n] or k == T - 1:
                    total += 0.0 if terminated[k, n] else discount * next_values[k, n]
                    break
            out[t, n] = total
    return out


@pytest.mark.usefixtures("float64")
def test_lambda_one_gives_the_papers_n_step_returns_with_truncation_bootstrap():
    """In a rollout V(s_{t+1}) is both next_values[t] and values[t+1] unless the episode ended at t (then
    next_values[t] is V of the true final observation): with that, GAE's TD errors telescope at lambda = 1."""
    g = torch.Generator().manual_seed(0)
    T, N = 5, 16
    rewards, values, final_values = (torch.randn(T, N, generator=g) for _ in range(3))
    terminated = torch.rand(T, N, generator=g) < 0.15
    truncated = (torch.rand(T, N, generator=g) < 0.15) & ~terminated
    ends = terminated | truncated
    assert terminated.any() and truncated.any()
    next_values = torch.where(ends, final_values, torch.cat([values[1:], final_values[-1:]]))
    advantages, returns = compute_gae(rewards, values, next_values, terminated, ends, 0.9, 1.0)
    expected = nstep_reference(*(x.numpy() for x in (rewards, values, next_values, terminated, ends)), 0.9)
    np.testing.assert_allclose(returns.numpy(), expected, rtol=1e-6, atol=1e-6)  # gamma enters in float32
    np.testing.assert_allclose(advantages.numpy(), expected - values.numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.usefixtures("float64")
def test_a2c_loss_gradients_are_the_papers_accumulated_gradients():
    """Algorithm S3: d theta ~ -sum grad log pi (R - V) - beta grad H, d theta_v ~ grad (R - V)^2 (here as means)."""
    g = torch.Generator().manual_seed(1)
    B = 7
    log_probs, entropy, values = (torch.randn(B, generator=g, requires_grad=True) for _ in range(3))
    returns = torch.randn(B, generator=g)
    advantages = returns - values.detach()
    loss, stats = a2c_loss(log_probs, entropy, values, advantages, returns, ent_coef=0.01, vf_coef=0.5)
    loss.backward()
    torch.testing.assert_close(log_probs.grad, -advantages / B)
    torch.testing.assert_close(values.grad, 0.5 * 2 * (values.detach() - returns) / B)
    torch.testing.assert_close(entropy.grad, torch.full((B,), -0.01 / B))
    torch.testing.assert_close(stats[1], (returns - values.detach()).pow(2).mean())


# --- K-FAC -------------------------------------------------------------------------------------------
def per_example_grads(model: nn.Module, log_likelihoods: torch.Tensor, layer: nn.Linear | nn.Conv2d) -> torch.Tensor:
    """(B, out * (rest + 1)): row-major vec of d log p_i / d [W | b] of `layer`, one example at a time."""
    rows = []
    for ll in log_likelihoods:
        gw, gb = torch.autograd.grad(ll, (layer.weight, layer.bias), retain_graph=True)
        rows.append(torch.cat([gw.reshape(gw.shape[0], -1), gb[:, None]], 1).reshape(-1))
    return torch.stack(rows)


def kfac_for(model: nn.Module) -> KFAC:
    return KFAC(model, lr=1.0, kl_clip=1.0, damping=1e-3, stat_decay=0.0, momentum=0.0)


@pytest.mark.usefixtures("float64")
def test_kfac_is_exact_for_one_linear_gaussian_layer_when_inputs_and_noise_are_independent():
    """y ~ N(W x + b, I): the per-example gradient is eps x~^T (eps = y - mean), so the Fisher block is
    E[x~ x~^T] (x) E[eps eps^T] whenever x and eps are independent. On the full grid of 4 inputs x 6 noise draws
    the empirical distribution is exactly such a product, so the explicit Fisher equals G (x) A to rounding."""
    g = torch.Generator().manual_seed(2)
    layer = nn.Linear(3, 2)
    xs, eps = torch.randn(4, 3, generator=g), torch.randn(6, 2, generator=g)
    x = xs.repeat_interleave(6, 0)  # (24, 3): every (input, noise) pair once
    noise = eps.repeat(4, 1)
    kfac = kfac_for(layer)
    with kfac.record():
        mean = layer(x)
    log_likelihood = -0.5 * ((mean.detach() + noise) - mean).pow(2).sum(-1)  # log N(y; mean, I) up to a constant
    kfac.update_factors(log_likelihood.sum())
    state = kfac.state[layer.weight]
    grads = per_example_grads(layer, log_likelihood, layer)
    fisher = grads.T @ grads / len(grads)
    torch.testing.assert_close(torch.kron(state["G"], state["A"]), fisher)
    x1 = torch.cat([xs, torch.ones(4, 1)], 1)
    torch.testing.assert_close(state["A"], x1.T @ x1 / 4)  # A: the inputs' second moment (bias as input 1)
    torch.testing.assert_close(state["G"], eps.T @ eps / 6)  # G: the noise's, i.e. the Gaussian's Fisher I


@pytest.mark.usefixtures("float64")
def test_kfac_blocks_of_a_deep_categorical_policy_match_the_explicit_fisher_where_kfac_is_exact():
    """Tanh MLP with a categorical output, actions sampled from it. (1) For one state, every layer's input is
    a constant, so each per-layer Fisher block is exactly G (x) A. (2) For many states, the bias block is
    exactly G (A's bias entry is E[1 * 1] = 1), while the weight block differs (K-FAC's approximation)."""
    g = torch.Generator().manual_seed(3)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3))
    one_state, many_states = torch.randn(1, 3, generator=g).repeat(40, 1), torch.randn(40, 3, generator=g)
    for states, exact_weights in ((one_state, True), (many_states, False)):
        kfac = kfac_for(model)
        with kfac.record():
            log_probs = torch.log_softmax(model(states), -1)
        actions = torch.multinomial(log_probs.exp().detach(), 1, generator=g)
        log_likelihood = log_probs.gather(1, actions).squeeze(1)
        kfac.update_factors(log_likelihood.sum())
        for layer in (model[0], model[2]):
            state = kfac.state[layer.weight]
            grads = per_example_grads(model, log_likelihood, layer)
            fisher = grads.T @ grads / len(grads)
            approx = torch.kron(state["G"], state["A"])
            n_in = layer.in_features + 1
            bias = [o * n_in + n_in - 1 for o in range(layer.out_features)]
            torch.testing.assert_close(approx[np.ix_(bias, bias)], fisher[np.ix_(bias, bias)])
            assert torch.allclose(approx, fisher) == exact_weights


@pytest.mark.usefixtures("float64")
def test_conv_factors_with_one_output_position_are_the_exact_fisher_of_a_linear_gaussian_layer():
    """A conv whose kernel covers its whole input (L = 1) is a linear layer on the flattened input: on the grid
    of inputs x independent Gaussian noise its Fisher block is exactly G (x) A, as for nn.Linear."""
    g = torch.Generator().manual_seed(6)
    conv = nn.Conv2d(2, 3, kernel_size=3)
    images, eps = torch.randn(4, 2, 3, 3, generator=g), torch.randn(5, 3, generator=g)
    x, noise = images.repeat_interleave(5, 0), eps.repeat(4, 1)
    kfac = kfac_for(conv)
    with kfac.record():
        mean = conv(x).flatten(1)  # (20, 3)
    log_likelihood = -0.5 * ((mean.detach() + noise) - mean).pow(2).sum(-1)
    kfac.update_factors(log_likelihood.sum())
    state = kfac.state[conv.weight]
    grads = per_example_grads(conv, log_likelihood, conv)
    torch.testing.assert_close(torch.kron(state["G"], state["A"]), grads.T @ grads / len(grads))


@pytest.mark.usefixtures("float64")
def test_conv_factors_average_patches_and_output_gradients_over_every_position():
    """KFC's factors for L > 1 (stride 2, padding 1) against a loop over the output positions that cuts each
    input window out by hand: A = mean over (example, position) of [patch, 1][patch, 1]^T, G = L * mean g g^T."""
    g = torch.Generator().manual_seed(7)
    conv = nn.Conv2d(2, 3, kernel_size=3, stride=2, padding=1)
    x = torch.randn(4, 2, 6, 5, generator=g)
    out_grads = torch.randn(4, 3, 3, 3, generator=g)  # output map of a 6 x 5 input: 3 x 3
    padded = nn.functional.pad(x, (1, 1, 1, 1))
    patches, grads = [], []
    for b in range(4):
        for i in range(3):
            for j in range(3):
                window = padded[b, :, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3].reshape(-1)
                patches.append(torch.cat([window, torch.ones(1)]))
                grads.append(out_grads[b, :, i, j])
    patches, grads = torch.stack(patches), torch.stack(grads)
    factor_a, factor_g = conv_factors(x, out_grads, conv)
    torch.testing.assert_close(factor_a, patches.T @ patches / len(patches))
    torch.testing.assert_close(factor_g, 9 * grads.T @ grads / len(grads))


def test_acktr_takes_a_trust_region_step_on_a_cnn_policy():
    """A CNN agent's every parameter is covered by a Kronecker block (conv and linear layers), and one K-FAC step
    changes the policy by about the trust region's KL (the predicted KL is kl_clip / 2). MinAtar's torso: the
    Nature CNN's 3137-input layer makes the eigendecomposition take a minute here."""
    from algorithms.common.networks import ActorCritic

    torch.manual_seed(8)
    agent = ActorCritic((10, 10, 4), action_dim=6, continuous=False, hidden=64)
    kfac = KFAC(agent, lr=10.0, kl_clip=0.002, damping=1e-3, stat_decay=0.0, momentum=0.0)
    assert {m for m in kfac.layers if isinstance(m, nn.Conv2d)} == {m for m in agent.modules() if isinstance(m, nn.Conv2d)}
    obs = (torch.rand(32, 10, 10, 4) < 0.2).float()
    with kfac.record():
        logits, values = agent.actor_and_value(obs)
    log_probs = torch.log_softmax(logits, -1)
    actions = torch.multinomial(log_probs.exp().detach(), 1).squeeze(1)
    taken = log_probs.gather(1, actions[:, None]).squeeze(1)
    kfac.update_factors(taken.sum() - 0.5 * (values.detach() + torch.randn(32) - values).pow(2).sum())
    advantages = torch.randn(32)
    loss = -(taken * advantages).mean() + 0.5 * (values - advantages).pow(2).mean()
    kfac.zero_grad()
    loss.backward()
    kfac.step()
    with torch.no_grad():
        new_log_probs = torch.log_softmax(agent.actor(obs), -1)
    kl = (log_probs.exp() * (log_probs - new_log_probs)).sum(-1).mean().item()
    assert 1e-5 < kl < 0.01, kl


@pytest.mark.usefixtures("float64")
def test_factors_are_running_averages_and_survive_a_state_dict_round_trip():
    g = torch.Generator().manual_seed(4)
    layer = nn.Linear(2, 2)
    kfac = KFAC(layer, lr=1.0, kl_clip=1.0, damping=1e-3, stat_decay=0.9, momentum=0.0)
    batches = [torch.randn(8, 2, generator=g) for _ in range(3)]
    expected_a = None
    for x in batches:
        with kfac.record():
            out = layer(x)
        kfac.update_factors((out * torch.randn(8, 2, generator=g)).sum())
        a, _ = linear_factors(x, torch.zeros(8, 2))
        expected_a = a if expected_a is None else 0.9 * expected_a + 0.1 * a
    torch.testing.assert_close(kfac.state[layer.weight]["A"], expected_a)
    copy_layer = nn.Linear(2, 2)
    copy = KFAC(copy_layer, lr=1.0, kl_clip=1.0, damping=1e-3, stat_decay=0.9, momentum=0.0)
    copy.load_state_dict(kfac.state_dict())
    assert copy.factor_updates == 3
    for key in ("A", "G", "QA", "dA", "QG", "dG"):
        torch.testing.assert_close(copy.state[copy_layer.weight][key], kfac.state[layer.weight][key])


@pytest.mark.usefixtures("float64")
def test_damped_natural_gradient_matches_a_dense_solve():
    g = torch.Generator().manual_seed(5)
    a_half, g_half = torch.randn(10, 4, generator=g), torch.randn(10, 3, generator=g)
    A, G = a_half.T @ a_half / 10, g_half.T @ g_half / 10
    grad = torch.randn(3, 4, generator=g)
    damping = 0.05
    dense = torch.linalg.solve(torch.kron(G, A) + damping * torch.eye(12), grad.reshape(-1)).reshape(3, 4)
    torch.testing.assert_close(kfac_precondition(grad, torch.linalg.eigh(A), torch.linalg.eigh(G), damping), dense)


@pytest.mark.usefixtures("float64")
def test_kfac_step_is_the_trust_region_bounded_natural_gradient():
    """One step from fixed factors: theta moves by -eta Delta with Delta = (F + damping)^-1 grad and
    eta = min(eta_max, sqrt(kl_clip / Delta^T F Delta)); the log-std's diagonal block 2 applies to its own grad."""
    g = torch.Generator().manual_seed(6)
    layer = nn.Linear(3, 2)
    log_std = nn.Parameter(torch.zeros(2))
    holder = nn.Module()
    holder.layer, holder.log_std = layer, log_std
    for kl_clip, expect_clipped in ((1e-6, True), (1e3, False)):
        kfac = KFAC(holder, lr=0.5, kl_clip=kl_clip, damping=0.1, stat_decay=0.0, momentum=0.0, diagonal_fisher={log_std: 2.0})
        x = torch.randn(16, 3, generator=g)
        with kfac.record():
            out = layer(x)
        kfac.update_factors((out * torch.randn(16, 2, generator=g)).sum())
        loss = (out.pow(2).sum(-1) * log_std.exp().sum()).mean()
        kfac.zero_grad()
        loss.backward()
        state = kfac.state[layer.weight]
        grad = torch.cat([layer.weight.grad, layer.bias.grad[:, None]], 1)
        dense_f = torch.kron(state["G"], state["A"]) + 0.1 * torch.eye(8)
        delta = torch.linalg.solve(dense_f, grad.reshape(-1))
        delta_std = log_std.grad / 2.1
        quadratic = delta @ dense_f @ delta + (delta_std * 2.1 * delta_std).sum()
        eta = min(0.5, float(torch.sqrt(kl_clip / quadratic)))
        before = torch.cat([layer.weight, layer.bias[:, None]], 1).detach().clone(), log_std.detach().clone()
        step = kfac.step()
        assert float(step) == pytest.approx(eta) and (eta < 0.5) == expect_clipped
        after = torch.cat([layer.weight, layer.bias[:, None]], 1).detach()
        torch.testing.assert_close(after, before[0] - eta * delta.reshape(2, 4))
        torch.testing.assert_close(log_std.detach(), before[1] - eta * delta_std)
        # the step's predicted KL, 0.5 eta^2 Delta^T F Delta, is inside the trust region delta = kl_clip / 2
        assert 0.5 * eta**2 * float(quadratic) <= kl_clip / 2 * (1 + 1e-9)
        assert float(trust_region_step_size(quadratic, 0.5, kl_clip)) == pytest.approx(eta)


@pytest.mark.usefixtures("float64")
def test_kfac_refuses_a_model_with_parameters_it_has_no_fisher_block_for():
    model = nn.Sequential(nn.Conv1d(1, 1, 2), nn.Flatten(), nn.Linear(3, 1))
    with pytest.raises(ValueError, match="no Fisher block"):
        KFAC(model, lr=1.0, kl_clip=1.0, damping=1e-3, stat_decay=0.0, momentum=0.0)


# --- learning ----------------------------------------------------------------------------------------
@pytest.fixture
def one_thread():
    """Tiny MLPs: one thread avoids OpenMP hand-offs that dominate (and, on a loaded machine, stall) each call;
    multi-threaded eigendecompositions of K-FAC's 65 x 65 factors took 100+ ms each under load, 1 ms on one."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("algo", ["a2c", "acktr"])
@pytest.mark.parametrize("seed", [1, 2])
def test_solves_cartpole_within_100k_steps(algo, seed):
    """Each module's defaults (A2C: 16 envs x 5 steps, RMSProp 7e-4; ACKTR: 16 x 20, eta_max 0.25, kl_clip 0.001;
    both annealed, observation and reward normalisation) but the step budget. Calibration, final deterministic
    evaluation over 10 episodes after 100k steps, seeds 1-5:
      A2C   500.0 on every seed (seed 4 was at 132 at 20k, 456 at 60k), 10-16 s per seed on the loaded machine
      ACKTR 500.0 on every seed (seed 2 dipped to 278 between 40k and 80k), 5-11 s per seed"""
    module = {"a2c": a2c, "acktr": acktr}[algo]
    result = module.train(module.Config(env_id="CartPole-v1", seed=seed, total_timesteps=100_000, eval_every=0))
    assert result.global_step >= 99_000
    assert result.final_eval_return >= 475, f"{algo} seed {seed}: {result.final_eval_return:.1f}"


@pytest.mark.slow
@pytest.mark.mujoco
@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("algo", ["a2c", "acktr"])
@pytest.mark.parametrize("seed", [1, 2])
def test_improves_clearly_on_inverted_pendulum_within_50k_steps(algo, seed):
    """InvertedPendulum-v5 (return = steps balanced, at most 1000). Before training the deterministic policy scores
    19-25 (seeds 1-3; a uniformly random one 4-6). Calibration with each module's defaults, final evaluation
    over 10 episodes after 50k steps, seeds 1-3:
      A2C   1000.0, 927.7, 1000.0 (seed 2: 73 at 20k, 738 at 40k), 6-9 s per seed on the loaded machine
      ACKTR 1000.0, 1000.0, 1000.0 (seed 2: 535 at 30k, 945 at 40k), 6-9 s per seed
    "Clearly better" is asked as at least 500, twenty times the untrained policy and half the maximum.
    (Pendulum-v1 was tried first: after 100k steps, seeds 1-2, A2C scored -1536 and -1494, ACKTR -1171 and -1171,
    no clear gain over the untrained policy's -1100 to -1500 within a CI budget.)"""
    module = {"a2c": a2c, "acktr": acktr}[algo]
    result = module.train(module.Config(env_id="InvertedPendulum-v5", seed=seed, total_timesteps=50_000, eval_every=0))
    assert result.final_eval_return >= 500, f"{algo} seed {seed}: {result.final_eval_return:.1f}"
