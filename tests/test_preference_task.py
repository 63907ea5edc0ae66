"""The synthetic controlled-generation task (envs/preferences.py): its exact optimum, reward, KL and teacher."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from envs.preferences import SyntheticLanguage, make_tokenizer


def every_completion(language: SyntheticLanguage, prompt: list[int]) -> tuple[np.ndarray, np.ndarray]:
    completions = np.array(list(itertools.product(range(language.vocab_size), repeat=language.completion_length)))
    return np.repeat(np.array([prompt]), len(completions), axis=0), completions


def chain_probability(policy: np.ndarray, prompts: np.ndarray, completions: np.ndarray) -> np.ndarray:
    previous = np.concatenate([prompts[:, -1:], completions[:, :-1]], axis=1)
    return np.prod([policy[t][previous[:, t], completions[:, t]] for t in range(completions.shape[1])], axis=0)


def test_the_language_is_a_distribution_and_the_reward_sums_its_words_and_pairs():
    language = SyntheticLanguage(vocab_size=3, prompt_length=2, completion_length=3, seed=1)
    prompts, completions = every_completion(language, [0, 2])
    assert np.exp(language.log_prob(prompts, completions)).sum() == pytest.approx(1.0)
    # By hand for y = (1, 0, 0) after a prompt ending in 2.
    w, b = language.word_score, language.pair_score
    by_hand = (w[1] + w[0] + w[0] + 0.5 * (b[2, 1] + b[1, 0] + b[0, 0])) / np.sqrt(3)
    assert language.reward(np.array([[0, 2]]), np.array([[1, 0, 0]]))[0] == pytest.approx(by_hand)
    t = language.transition
    assert language.log_prob(np.array([[0, 2]]), np.array([[1, 0, 0]]))[0] == pytest.approx(
        np.log(t[2, 1] * t[1, 0] * t[0, 0])
    )


@pytest.mark.parametrize("beta", [0.2, 1.0, 5.0])
def test_the_optimal_policy_is_the_closed_form_of_the_kl_regularised_objective(beta):
    """pi*(y | x) proportional to pi_lang(y | x) exp(r(x, y) / beta), enumerated over every completion of two prompts."""
    language = SyntheticLanguage(vocab_size=3, prompt_length=2, completion_length=3, seed=1)
    policy = language.optimal_policy(beta)
    assert policy.shape == (3, 3, 3) and np.allclose(policy.sum(axis=2), 1)
    for prompt in ([0, 2], [1, 1]):
        prompts, completions = every_completion(language, prompt)
        closed_form = np.exp(language.log_prob(prompts, completions) + language.reward(prompts, completions) / beta)
        closed_form /= closed_form.sum()
        assert np.allclose(chain_probability(policy, prompts, completions), closed_form, atol=1e-12)


def test_exact_reward_and_kl_agree_with_monte_carlo_and_trace_a_frontier():
    language = SyntheticLanguage(seed=3)
    rng = np.random.default_rng(0)
    prompts = language.sample_prompts(40_000, rng)
    reference = np.broadcast_to(language.transition, (language.completion_length, 16, 16)).copy()
    assert language.policy_reward_and_kl(reference)[1] == pytest.approx(0.0, abs=1e-12)
    frontier = []
    for beta in (0.3, 1.0, 3.0):
        policy = language.optimal_policy(beta)
        reward, kl = language.policy_reward_and_kl(policy)
        completions = language.sample_completions(prompts, rng, policy)
        log_ratio = np.log(chain_probability(policy, prompts, completions)) - language.log_prob(prompts, completions)
        assert language.reward(prompts, completions).mean() == pytest.approx(reward, abs=0.03)
        assert log_ratio.mean() == pytest.approx(kl, abs=0.03 + 0.01 * kl)
        frontier.append((kl, reward))
    # A smaller beta buys more reward with more KL.
    assert frontier[0][0] > frontier[1][0] > frontier[2][0] and frontier[0][1] > frontier[1][1] > frontier[2][1]
    base_reward = language.reward(prompts, language.sample_completions(prompts, rng)).mean()
    assert base_reward == pytest.approx(language.policy_reward_and_kl(reference)[0], abs=0.03)
    assert frontier[2][1] > base_reward


@pytest.mark.parametrize("label_noise", [0.0, 0.2])
def test_the_teacher_is_bradley_terry_on_the_true_reward_then_errs_at_random(label_noise):
    language = SyntheticLanguage(seed=2)
    rng = np.random.default_rng(1)
    prompts = language.sample_prompts(200_000, rng)
    first, second = language.sample_completions(prompts, rng), language.sample_completions(prompts, rng)
    prefer_first = language.label(prompts, first, second, rng, label_noise)
    margin = language.reward(prompts, first) - language.reward(prompts, second)
    for low, high in ((-3, -1), (-0.5, 0.5), (1, 3)):
        inside = (margin > low) & (margin < high)
        p = 1 / (1 + np.exp(-margin[inside]))
        expected = ((1 - label_noise) * p + label_noise * (1 - p)).mean()
        assert prefer_first[inside].mean() == pytest.approx(expected, abs=0.01)
    with pytest.raises(ValueError, match="label_noise must be in"):
        language.label(prompts, first, second, rng, 0.7)


def test_same_seed_same_task_and_another_seed_another():
    a, b, c = SyntheticLanguage(seed=5), SyntheticLanguage(seed=5), SyntheticLanguage(seed=6)
    assert np.array_equal(a.transition, b.transition) and np.array_equal(a.word_score, b.word_score)
    assert not np.allclose(a.transition, c.transition)
    draws = [x.sample_prompts(4, np.random.default_rng(0)) for x in (a, b)]
    assert np.array_equal(*draws)


def test_text_round_trip_through_a_saved_hugging_face_tokenizer(tmp_path):
    transformers = pytest.importorskip("transformers")

    language = SyntheticLanguage()
    words = language.sample_prompts(5, np.random.default_rng(0))
    texts = language.to_text(words)
    assert texts[0].startswith("w") and len(texts[0].split()) == language.prompt_length
    assert np.array_equal(language.from_text(texts), words)
    make_tokenizer(language).save_pretrained(tmp_path)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert tokenizer(texts)["input_ids"] == words.tolist()
    assert tokenizer.pad_token_id == 16 and tokenizer.eos_token_id == 17
    for bad in (["w3 x1"], ["w3 w16"], ["w1 w2", "w1"]):
        with pytest.raises(ValueError):
            language.from_text(bad)


def test_preference_files_round_trip_and_a_bad_line_is_refused_with_its_number(tmp_path):
    from envs.preferences import read_preferences, write_preferences

    pairs = [{"prompt": "w1 w2", "chosen": " w3", "rejected": " w4"}, {"prompt": "a", "chosen": "b", "rejected": "c"}]
    path = tmp_path / "pairs.jsonl"
    write_preferences(path, pairs)
    assert read_preferences(path) == [{**pair, "line": number} for number, pair in enumerate(pairs, start=1)]
    good = path.read_text()
    for bad, reason in (
        ("{not json", "line 3: not JSON"),
        ('["a", "b"]', "line 3: a JSON object with prompt, chosen and rejected is expected"),
        ('{"prompt": "a", "chosen": "b"}', "line 3: rejected missing or not a string"),
        ('{"prompt": "a", "chosen": 1, "rejected": "c"}', "line 3: chosen missing or not a string"),
        ('{"prompt": "a", "chosen": " ", "rejected": "c"}', "line 3: an empty completion"),
    ):
        path.write_text(good + bad + "\n")
        with pytest.raises(ValueError, match=reason):
            read_preferences(path)
    path.write_text("\n\n")
    with pytest.raises(ValueError, match="holds no preference pairs"):
        read_preferences(path)
    with pytest.raises(ValueError, match="does not exist"):
        read_preferences(tmp_path / "none.jsonl")
