"""Atari (ale-py) with the standard preprocessing and two named evaluation protocols, on two interchangeable paths.

Preprocessing (Mnih et al. 2015; Machado et al. 2018 section 5): each action repeated for 4 frames with the last
two max-pooled (flicker), 84 x 84 grey frames (area interpolation), a stack of the last 4 (uint8, shape
(4, 84, 84), oldest first, zeros before the first frame of a game), and at the start of every game FIRE (in games
that have it) and up to 30 frames of no-ops; in training only, a lost life is a terminal transition for the
learner (the game goes on) and rewards are clipped to their sign. Every game is cut after 108,000 frames
(30 minutes of play; a truncation).

Two paths compute exactly this, and for the same seeds and actions give the same observations, rewards and
episode ends (tests/test_atari.py checks it step by step, sticky actions and no-op starts included):
- the fast path (default when ale-py has it): ale-py's C++ `AtariVectorEnv`, every copy stepped on a thread pool;
- `AtariGame`, one game in Python over the ALE, the same algorithm line by line. Its state can be captured, so
  a checkpointed run resumes exactly; `RLGRID_ATARI_BACKEND=python` selects it. A run on the fast path that is
  resumed starts fresh games (the C++ games' state cannot be saved); everything else is restored.

Deviations from the DQN paper's description (kept, as the C++ path fixes them): no-ops are 0-29 single frames
(baselines: 1-30), FIRE is one frame pressed before them, and after a lost life the game just goes on: no no-op
step, no FIRE, no restart of the frame stack (baselines presses FIRE and restarts the stack after each life).

Protocols:
- `dqn-nature`: no sticky actions, minimal action set, no-op starts, life loss (training) and fire reset: the
  `NoFrameskip-v4` setting behind most published tables (DQN, Double DQN, A2C, PPO, ACKTR papers).
- `machado2018`: sticky actions with probability 0.25 instead of no-op starts, whole games as episodes (no
  life-loss signal, no fire reset): the recommendation of Machado et al. (2018), gymnasium's `-v5` default.
The id picks the protocol unless `protocol=` is given: `<Game>NoFrameskip-v4` ids run `dqn-nature`, `ALE/<Game>-v5`
ids `machado2018` (`default_protocol`).

The episodes reported (`info["episodes"]` of the vector envs, and evaluation) are whole games with unclipped scores,
whatever the learner's episodes are.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

import cv2
import gymnasium as gym
import numpy as np

from envs.vector import VecEnv

MAX_FRAMES_PER_GAME = 108_000
FRAME_SKIP, SCREEN_SIZE, STACK = 4, 84, 4
BACKENDS = ("vector", "python")
ALE_SETTINGS = ("repeat_action_probability", "full_action_space")
"""ALE settings that env_kwargs may override besides `protocol`"""


@dataclass(frozen=True)
class AtariProtocol:
    repeat_action_probability: float
    noop_max: int
    life_loss: bool  # training only: a lost life is a terminal transition (the game goes on)
    fire_reset: bool


PROTOCOLS = {
    "dqn-nature": AtariProtocol(repeat_action_probability=0.0, noop_max=30, life_loss=True, fire_reset=True),
    "machado2018": AtariProtocol(repeat_action_probability=0.25, noop_max=0, life_loss=False, fire_reset=False),
}


def default_protocol(env_id: str) -> str:
    """`machado2018` for gymnasium's `ALE/<Game>-v5` ids (sticky actions are their default), else `dqn-nature`."""
    return "machado2018" if env_id.endswith("-v5") else "dqn-nature"


@dataclass(frozen=True)
class AtariSettings:
    """What both paths are built from: the ROM, the protocol's settings, and whether this is a training copy."""

    game: str  # ale-py's ROM name, e.g. "pong"
    protocol: AtariProtocol
    repeat_action_probability: float
    full_action_space: bool
    training: bool

    @property
    def life_loss(self) -> bool:
        return self.training and self.protocol.life_loss


def atari_settings(env_id: str, training: bool, env_kwargs: dict[str, Any]) -> AtariSettings:
    """Settings of a registered ALE id; env_kwargs may name `protocol` and override `ALE_SETTINGS`."""
    kwargs = dict(env_kwargs)
    name = kwargs.pop("protocol", None) or default_protocol(env_id)
    if name not in PROTOCOLS:
        raise ValueError(f"unknown Atari protocol {name!r}; known: {', '.join(PROTOCOLS)}")
    unknown = set(kwargs) - set(ALE_SETTINGS)
    if unknown:
        raise ValueError(f"unsupported Atari env_kwargs {sorted(unknown)}; supported: protocol, {', '.join(ALE_SETTINGS)}")
    protocol = PROTOCOLS[name]
    game = gym.spec(env_id.split(":", 1)[-1]).kwargs["game"]
    return AtariSettings(
        game=game,
        protocol=protocol,
        training=training,
        repeat_action_probability=float(kwargs.get("repeat_action_probability", protocol.repeat_action_probability)),
        full_action_space=bool(kwargs.get("full_action_space", False)),
    )


def backend() -> str:
    """`RLGRID_ATARI_BACKEND` (vector or python); by default the C++ vector env where this ale-py has it."""
    chosen = os.environ.get("RLGRID_ATARI_BACKEND", "")
    if chosen and chosen not in BACKENDS:
        raise ValueError(f"RLGRID_ATARI_BACKEND must be one of {', '.join(BACKENDS)}, got {chosen!r}")
    if chosen:
        return chosen
    try:
        from ale_py.vector_env import AtariVectorEnv  # noqa: F401
    except ImportError:
        return "python"
    return "vector"


class NoopDraws:
    """The C++ path's no-op counts: std::mt19937 seeded with the game's seed (numpy's legacy seeding of MT19937 is
    the same init_genrand), and libstdc++'s uniform_int_distribution over [0, n - 1] for a 32-bit generator (Lemire's
    multiply-and-shift with rejection)."""

    def __init__(self, noop_max: int) -> None:
        self.count = max(noop_max, 1)
        self.rng = np.random.RandomState(0)

    def seed(self, seed: int) -> None:
        self.rng = np.random.RandomState(seed)

    def draw(self) -> int:
        threshold = (2**32 - self.count) % self.count
        while True:
            product = int(self.rng.randint(0, 2**32, dtype=np.uint64)) * self.count
            if product & 0xFFFFFFFF >= threshold:
                return product >> 32


class AtariGame(gym.Env):
    """One preprocessed game in Python over the ALE, step for step what one copy of the C++ `AtariVectorEnv` does
    (its `PreprocessedEnv`), so that the two paths agree exactly.

    `terminated` is a game over, or in training under `dqn-nature` a lost life. `reset()` without a seed after a
    lost life leaves the game as it is (the vector env calls reset at every learner episode end); a new game starts
    after a game over or truncation, or when a seed is given (which reseeds the emulator and the no-op draws).
    The step info says what `VecEnv` reports as episodes, whole games: `episode_continues` after a lost life that ended
    the learner's episode, `episode_return` (the unclipped score) when a game ended."""

    metadata = {"render_modes": []}

    def __init__(self, settings: AtariSettings) -> None:
        from ale_py import Action, ALEInterface, LoggerMode, roms

        ALEInterface.setLoggerMode(LoggerMode.Error)
        self.settings = settings
        self.rom = roms.get_rom_path(settings.game)
        self.ale = ALEInterface()
        self.ale.setFloat("repeat_action_probability", settings.repeat_action_probability)
        self.ale.loadROM(self.rom)
        actions = self.ale.getLegalActionSet() if settings.full_action_space else self.ale.getMinimalActionSet()
        self.action_set = list(actions)
        self.fire_reset = settings.protocol.fire_reset and Action.FIRE in self.action_set
        self.fire, self.noop = Action.FIRE, Action.NOOP
        self.noops = NoopDraws(settings.protocol.noop_max)
        height, width = self.ale.getScreenDims()
        self.raw = np.zeros((2, height, width), np.uint8)  # the last two frames of a skip; raw[0] ends up their max
        self.stack = np.zeros((STACK, SCREEN_SIZE, SCREEN_SIZE), np.uint8)  # a ring; `newest` is the next slot
        self.newest, self.frames, self.lives, self.game_return = 0, 0, 0, 0.0
        self.game_over, self.last_action = True, 0
        self.observation_space = gym.spaces.Box(0, 255, self.stack.shape, np.uint8)
        self.action_space = gym.spaces.Discrete(len(self.action_set))

    def _observation(self) -> np.ndarray:
        return np.concatenate([self.stack[self.newest :], self.stack[: self.newest]])  # oldest first

    def _push_frame(self) -> None:
        np.maximum(self.raw[0], self.raw[1], out=self.raw[0])  # in place, as the C++ path
        self.stack[self.newest] = cv2.resize(self.raw[0], (SCREEN_SIZE, SCREEN_SIZE), interpolation=cv2.INTER_AREA)
        self.newest = (self.newest + 1) % STACK

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if seed is None and not self.game_over:  # after a lost life: the game goes on
            return self._observation(), {"lives": self.lives}
        if seed is not None:
            self.ale.setInt("random_seed", int(seed))
            self.noops.seed(int(seed))
            self.ale.loadROM(self.rom)
        self.ale.reset_game()
        if self.fire_reset:
            self.ale.act(self.fire)
        for _ in range(self.noops.draw() - int(self.fire_reset)):
            self.ale.act(self.noop)
            if self.ale.game_over():
                self.ale.reset_game()
        self.stack[:] = 0
        self.newest = 0
        self.ale.getScreenGrayscale(self.raw[0])
        self.raw[1] = 0
        self._push_frame()
        self.frames, self.game_return, self.game_over = 0, 0.0, False
        self.lives, self.last_action = self.ale.lives(), 0
        return self._observation(), {"lives": self.lives}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        ale_action = self.action_set[int(action)]
        self.last_action = int(action)
        reward, life_lost = 0, False
        for skip in range(FRAME_SKIP, 0, -1):
            reward += self.ale.act(ale_action)
            self.game_over = self.ale.game_over()
            self.frames += 1
            life_lost = 0 < self.ale.lives() < self.lives
            if self.game_over or self.frames >= MAX_FRAMES_PER_GAME:
                break
            if skip <= 2:  # the last two frames, max-pooled
                self.ale.getScreenGrayscale(self.raw[skip - 1])
        self._push_frame()
        self.lives = self.ale.lives()
        self.game_return += reward
        terminated = self.game_over or (self.settings.life_loss and life_lost)
        truncated = self.frames >= MAX_FRAMES_PER_GAME and not terminated
        info: dict[str, Any] = {"lives": self.lives}
        if self.game_over or truncated:
            self.game_over = True
            info["episode_return"] = self.game_return
        elif terminated:
            info["episode_continues"] = True
        clipped = float(np.sign(reward)) if self.settings.training else float(reward)
        return self._observation(), clipped, terminated, truncated, info

    # --- exact resume (envs.state) ------------------------------------------------------------------
    def capture_state(self) -> dict[str, Any]:
        return {
            "ale": self.ale.cloneState(include_rng=True).serialize(),  # bytes: checkpoints hold plain data only
            "noops": self.noops.rng.get_state(),
            "raw": self.raw.copy(),
            "stack": self.stack.copy(),
            "counters": (self.newest, self.frames, self.lives, self.game_return, self.game_over, self.last_action),
        }

    def restore_state(self, state: dict[str, Any]) -> None:
        """The emulator, and with sticky actions the action it would repeat, which its saved state leaves out: the
        emulator is stepped with that action until it has (almost surely) taken it, which also makes it the action
        to repeat, and the state is restored again (emulator and RNG; the action stays)."""
        from ale_py import ALEState

        emulator = ALEState(state["ale"])
        self.ale.restoreState(emulator)
        if self.settings.repeat_action_probability > 0:
            for _ in range(STICKY_PRIMING_FRAMES):
                self.ale.act(self.action_set[state["counters"][5]])
            self.ale.restoreState(emulator)
        self.noops.rng.set_state(state["noops"])
        self.raw[:], self.stack[:] = state["raw"], state["stack"]
        self.newest, self.frames, self.lives, self.game_return, self.game_over, self.last_action = state["counters"]


STICKY_PRIMING_FRAMES = 64
"""frames of priming: with p = 0.25 the chance that the ALE still repeats the old action is 0.25^64"""


def make_atari_env(env_id: str, protocol: str | None = None, training: bool = True, **kwargs: Any) -> AtariGame:
    """One preprocessed game on the Python path (`AtariGame`); `protocol` defaults to the id's, `kwargs` override
    the ALE settings named in `ALE_SETTINGS`."""
    import ale_py

    gym.register_envs(ale_py)
    return AtariGame(atari_settings(env_id, training, {"protocol": protocol, **kwargs}))


class AtariPythonVecEnv(VecEnv):
    """`VecEnv` on the Python path: one `AtariGame` per copy, with the training-only parts of the protocol (life loss,
    reward clipping) left out of evaluation copies. Checkpoints capture every game exactly."""

    def _make_copies(self, num_envs: int) -> list[gym.Env]:
        settings = atari_settings(self.spec.env_id, self.training, dict(self.spec.env_kwargs))
        return [AtariGame(settings) for _ in range(num_envs)]

    def frame(self) -> np.ndarray:
        return self.envs[0].ale.getScreenRGB()

    def render_fps(self) -> float | None:
        return 60 / FRAME_SKIP  # one agent step is FRAME_SKIP emulator frames at 60 Hz

    def _load_copies_state(self, state: dict[str, Any]) -> None:
        if "atari_vector" in state:
            raise ValueError(
                "this checkpoint was written on the C++ Atari path, which cannot save its games: resume it there "
                "(RLGRID_ATARI_BACKEND=vector, the default)"
            )
        super()._load_copies_state(state)


def _cpu_threads() -> int:
    """The run's thread budget: torch's (which `--threads-per-run` sets) when torch is loaded, else the CPUs."""
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else len(os.sched_getaffinity(0))


def make_vector_games(settings: AtariSettings, num_envs: int) -> Any:
    """The fast path: ale-py's C++ `AtariVectorEnv` with the same preprocessing as `AtariGame`. It returns whole
    games, unclipped rewards and the lives left; the learner's life-loss ends and reward clipping are applied by
    the caller (`AtariVecEnv` below), so game scores stay unclipped."""
    from ale_py.vector_env import AtariVectorEnv

    return AtariVectorEnv(
        settings.game,
        num_envs,
        num_threads=min(num_envs, _cpu_threads()),
        autoreset_mode="SameStep",
        max_num_frames_per_episode=MAX_FRAMES_PER_GAME,
        frameskip=FRAME_SKIP,
        maxpool=True,
        img_height=SCREEN_SIZE,
        img_width=SCREEN_SIZE,
        grayscale=True,
        stack_num=STACK,
        noop_max=settings.protocol.noop_max,
        use_fire_reset=settings.protocol.fire_reset,
        episodic_life=False,
        life_loss_info=False,
        reward_clipping=False,
        repeat_action_probability=settings.repeat_action_probability,
        full_action_space=settings.full_action_space,
    )


class AtariVecEnv(VecEnv):
    """`VecEnv` on the fast path: the copies are one C++ `AtariVectorEnv` (whole games, raw rewards, lives); the
    learner's life-loss ends and reward clipping are applied here, as `AtariGame` applies them on the Python path.

    Its games' state cannot be saved: `load_state_dict` restores everything else (statistics) and starts fresh
    games, seeded from the run's seed and the step count; `observation()` is then their first observation."""

    def frozen_copy(self, num_envs: int, render_first: bool = False) -> VecEnv:
        """Evaluation copies; with `render_first` on the Python path, whose games play step for step the same and can
        show their screen (the C++ vector env returns only the preprocessed frames)."""
        if render_first:
            return AtariPythonVecEnv(self.spec, num_envs, training=False, render_first=True)
        return super().frozen_copy(num_envs)

    def _make_copies(self, num_envs: int) -> list[gym.Env]:
        self.settings = atari_settings(self.spec.env_id, self.training, dict(self.spec.env_kwargs))
        self.games = make_vector_games(self.settings, num_envs)
        self._lives = np.zeros(num_envs, np.int64)
        self._seed, self._steps = 0, 0
        return []

    def _spaces(self) -> tuple[gym.Space, gym.Space]:
        return self.games.single_observation_space, self.games.single_action_space

    def _reset_copies(self, seed: int | None) -> None:
        if seed is not None:
            self._seed = seed
        obs, info = self.games.reset(seed=seed)
        self._raw_obs[:] = obs
        self._lives[:] = info["lives"]

    def _step_copies(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, dict[int, np.ndarray], list[tuple[int, float, int]]]:
        obs, reward, game_over, truncated, info = self.games.step(np.asarray(actions, np.int64))
        self._steps += 1
        game_end = game_over | truncated
        # After a game ends, `lives` is already the next game's (the vector env resets in the same step).
        life_lost = (0 < info["lives"]) & (info["lives"] < self._lives) & ~game_end
        self._lives[:] = info["lives"]
        terminated = game_over | (life_lost if self.settings.life_loss else False)
        self._episode_return += reward
        self._episode_length += 1
        episodes = [(int(i), float(self._episode_return[i]), int(self._episode_length[i])) for i in np.flatnonzero(game_end)]
        final_raw = {int(i): info["final_obs"][i].copy() for i in np.flatnonzero(game_end)}
        final_raw.update({int(i): obs[i].copy() for i in np.flatnonzero(terminated & ~game_end)})  # the game goes on
        self._episode_return[game_end] = 0.0
        self._episode_length[game_end] = 0
        self._raw_obs[:] = obs
        self._reward[:] = np.sign(reward) if self.settings.training else reward
        return terminated, truncated, final_raw, episodes

    def _copies_state(self) -> dict[str, Any]:
        return {"atari_vector": {"seed": self._seed, "steps": self._steps}}

    def _load_copies_state(self, state: dict[str, Any]) -> None:
        saved = state.get("atari_vector") or {"seed": self._seed, "steps": 0}
        self._steps = saved["steps"]
        self._reset_copies((saved["seed"] * 1_000_003 + self._steps) % 2**31)
        self._episode_return[:] = 0.0
        self._episode_length[:] = 0
        self._discounted_return[:] = 0.0

    def close(self) -> None:
        self.games.close()
