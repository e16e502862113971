"""A trained VLA run as a closed-loop policy: raw observations in, absolute target poses out.

`Policy.load(run_dir_or_checkpoint)` restores what training saved with the checkpoint: `config.json` (the
resolved experiment config of `experiments/vla.py`: model, robot and normalization configs), the params (the
EMA params when the run kept them), `tokenizer.json` and `stats.json`. `act(obs)` builds the model input
exactly as the robot data pipeline (`foundry.data.robot`) does for training:

- images: `obs["images"][cam]` (H, W, 3) uint8 per camera of `robot.cameras`, through
  `foundry.data.images.preprocess` (the training code path), camera-major over `robot.image_offsets`. A
  negative offset -k is the frame k observations back, counting every observation given to `act` or
  `observe` (the evaluator gives each env step's observation to one of them, so -k is k env steps back,
  as in training); at the start of an episode the first frame is repeated.
- proprioception: `obs[field]` per `robot.proprio_fields`, normalized with the run's `Normalizer` (past steps,
  if the model uses any, come from earlier observations, as the images).
- the instruction (`instruction=` or `obs["instruction"]`), tokenized by the run's tokenizer, cut to
  `robot.max_instruction_tokens`; the prompt is laid out by `vla.prompt`.

One action chunk is sampled (`vla.sample_actions`: the VLM prefix once, then the flow head's Euler steps)
with the key `fold_in(rng.key(seed), call)`, un-normalized, and relative fields are composed with the
current reference pose (`foundry.data.rotations.compose_pose`): (n, 10) absolute target poses, the first
`execute_steps` of them (all by default; the evaluator executes its own prefix open loop).

Usage::

    policy = Policy.load("runs/vla-tabletop")
    policy.reset(seed=3)
    chunk = policy.act(env.reset(seed=3, task="push"))       # (10, 10) absolute target poses
    obs, done, info = env.step(chunk[0])
    policy.observe(obs)                                       # steps executed without re-planning
    evaluate(functools.partial(load_trained_policy, run_dir="runs/vla-tabletop"), EvalConfig(...))
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path

import numpy as np
import torch

from foundry import rng, tree
from foundry.data.images import preprocess
from foundry.data.normalize import Normalizer, NormConfig, load_stats
from foundry.data.robot import RobotConfig
from foundry.data.rotations import compose_pose
from foundry.data.tokenizer import load_tokenizer
from foundry.models import vla
from foundry.train import checkpoint
from foundry.train.runs import config_from_dict


@functools.lru_cache(maxsize=4)
def _tokenizer_from_json(text: str):
    from tokenizers import Tokenizer

    return Tokenizer.from_str(text)


@dataclasses.dataclass(frozen=True)
class InstructionTokenizer:
    """Picklable `str -> list[int]` for the robot data workers and the policy: the tokenizer's JSON travels
    (the `tokenizers` object is rebuilt once per process)."""

    tokenizer_json: str

    @classmethod
    def from_file(cls, path: str | Path) -> InstructionTokenizer:
        return cls(load_tokenizer(path).to_str())

    def __call__(self, text: str) -> list[int]:
        return _tokenizer_from_json(self.tokenizer_json).encode(text).ids


def resolve_checkpoint(path: str | Path) -> Path:
    """The newest complete checkpoint of a run directory, or `path` itself when it is a checkpoint."""
    path = Path(path)
    if (path / "state.json").is_file():
        return path
    newest = checkpoint.latest(path)
    if newest is None:
        raise FileNotFoundError(f"{path}: neither a checkpoint (no state.json) nor a run with a complete checkpoint")
    return newest


class Policy:
    """A VLA policy over raw observations (see the module docstring); satisfies
    `foundry.eval.rollouts.ActionChunkPolicy`."""

    def __init__(
        self,
        params: dict,
        cfg: vla.Config,
        robot: RobotConfig,
        normalizer: Normalizer,
        tokenize,
        *,
        sample_steps: int = 10,
        execute_steps: int | None = None,
        device: str | torch.device = "cpu",
        compiled: bool = False,  # the Euler sampler compiled (worth it on a GPU; ~20 s per process on CPU)
        noise_scale: float = 1.0,  # see `vla.sample_actions`
    ):
        if robot.past_action_steps:
            raise ValueError("Policy: models that read past actions (robot.past_action_steps > 0) are not supported")
        if robot.uint8_images:
            robot = dataclasses.replace(robot, uint8_images=False)  # the same float values as training
        self.params = tree.map(lambda x: x.to(device), params)
        self.cfg, self.robot, self.normalizer, self.tokenize = cfg, robot, normalizer, tokenize
        self.sample_steps, self.execute_steps, self.device = sample_steps, execute_steps, torch.device(device)
        self.compiled, self.noise_scale = compiled, noise_scale
        self.reset()

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        use_ema: bool = True,
        sample_steps: int | None = None,
        execute_steps: int | None = None,
        device: str | torch.device = "cpu",
        compiled: bool = False,
        noise_scale: float = 1.0,
    ) -> Policy:
        """Restore a policy from a VLA run directory (its newest checkpoint) or a checkpoint directory."""
        ckpt_dir = resolve_checkpoint(path)
        config = json.loads((ckpt_dir / "config.json").read_text())
        for name in ("model", "robot", "norm"):
            if name not in config:
                raise ValueError(
                    f"{ckpt_dir / 'config.json'} has no {name!r}: is {path} a VLA run (experiments/vla.py)?"
                )
        for name in ("tokenizer.json", "stats.json"):
            if not (ckpt_dir / name).is_file():
                raise FileNotFoundError(f"{ckpt_dir} lacks {name}: is {path} a VLA run (experiments/vla.py)?")
        cfg = config_from_dict(vla.Config, config["model"])
        robot = config_from_dict(RobotConfig, config["robot"])
        norm = config_from_dict(NormConfig, config["norm"])
        state = checkpoint.load(ckpt_dir).state
        params = state["ema"] if use_ema and "ema" in state else state["params"]
        fields = [robot.stats_name(f) for f in robot.proprio_fields + robot.action_fields]
        normalizer = Normalizer.from_stats(load_stats(ckpt_dir / "stats.json"), norm, fields=fields)
        tokenize = InstructionTokenizer.from_file(ckpt_dir / "tokenizer.json")
        steps = sample_steps if sample_steps is not None else int(config.get("sample_steps", 10))
        return cls(params, cfg, robot, normalizer, tokenize, sample_steps=steps, execute_steps=execute_steps,
                   device=device, compiled=compiled, noise_scale=noise_scale)  # fmt: skip

    def reset(self, *, seed: int | None = None) -> None:
        """Start an episode: forget the frame/pose history; `seed` (default 0) drives the flow noise."""
        self._key = rng.key(0 if seed is None else int(seed), device=self.device)
        self._calls = 0
        self._frames: dict[str, list[np.ndarray]] = {}
        self._proprio: list[np.ndarray] = []

    def _history(self, past: list[np.ndarray], current: np.ndarray, offset: int) -> np.ndarray:
        """The value `-offset` observations ago (`past` oldest first), the oldest one at the episode start."""
        if offset >= 0:
            return current
        return past[max(len(past) + offset, 0)] if past else current

    def _current_frames(self, observation: dict) -> dict[str, np.ndarray]:
        r, images = self.robot, observation.get("images", {})
        if missing := [c for c in r.cameras if c not in images]:
            raise KeyError(f"observation has no image of cameras {missing}; it has {sorted(images)}")
        return {c: preprocess(np.asarray(images[c], np.uint8), size=r.image_size, mode=r.image_mode) for c in r.cameras}

    def inputs(self, observation: dict, instruction: str | None = None) -> dict[str, torch.Tensor]:
        """The model batch (B = 1) for `observation` given the history so far (not updated here)."""
        return self._inputs(observation, self._current_frames(observation), instruction)

    def _inputs(self, observation: dict, frames: dict, instruction: str | None) -> dict[str, torch.Tensor]:
        r, dev = self.robot, self.device
        images = [self._history(self._frames.get(c, []), frames[c], off) for c in r.cameras for off in r.image_offsets]
        proprio = self._current_proprio(observation)  # (Dp_data,) raw
        offsets = range(-r.past_steps, 1)
        steps = np.stack([self._history(self._proprio, proprio, off) for off in offsets])  # (P, Dp_data)
        parts, col = [], 0
        for f in r.proprio_fields:
            width = self.normalizer.center[r.stats_name(f)].shape[-1]
            parts.append(self.normalizer.normalize(steps[:, col : col + width], r.stats_name(f), offsets=offsets))
            col += width
        vec = np.concatenate(parts, -1).astype(np.float32)
        dp = self.cfg.head.proprio_dim
        if vec.shape[-1] > dp:
            raise ValueError(f"proprio {r.proprio_fields} has {vec.shape[-1]} dims > the model's {dp}")
        text = observation.get("instruction") if instruction is None else instruction
        if text is None:
            raise ValueError("no instruction: pass instruction= or an observation with 'instruction'")
        ids = list(self.tokenize(str(text)))[: r.max_instruction_tokens]
        t = lambda a, dtype: torch.as_tensor(np.asarray(a), dtype=dtype, device=dev)[None]
        return {
            "images": t(np.stack(images), torch.float32),
            "proprio": t(np.pad(vec, ((0, 0), (0, dp - vec.shape[-1]))), torch.float32),
            "proprio_mask": torch.ones(1, len(offsets), dtype=torch.bool, device=dev),
            "proprio_dim_mask": t(np.arange(dp) < vec.shape[-1], torch.bool),
            "instruction_ids": t(np.asarray(ids, np.int64), torch.int64),
            "instruction_mask": torch.ones(1, len(ids), dtype=torch.bool, device=dev),
        }

    def _current_proprio(self, observation: dict) -> np.ndarray:
        missing = [f for f in self.robot.proprio_fields if f not in observation]
        if missing:
            raise KeyError(f"observation lacks proprio fields {missing}; it has {sorted(observation)}")
        return np.concatenate([np.asarray(observation[f], np.float64).reshape(-1) for f in self.robot.proprio_fields])

    def postprocess(self, chunk: torch.Tensor, observation: dict) -> np.ndarray:
        """A normalized (F, Da) chunk -> (F, C) absolute actions: un-normalized per action field, relative
        fields composed with the current reference pose; padding columns dropped."""
        r = self.robot
        y = chunk.detach().double().cpu().numpy()
        out, col = [], 0
        for f in r.action_fields:
            name = r.stats_name(f)
            width = self.normalizer.center[name].shape[-1]
            values = self.normalizer.unnormalize(y[:, col : col + width], name, offsets=range(len(y)))
            col += width
            if r.relative_actions and f in r.relative_fields:
                ref = np.asarray(observation[r.reference_field], np.float64).reshape(-1)
                values = compose_pose(ref, values, r.relative_frame)
            out.append(values)
        return np.concatenate(out, -1).astype(np.float32)

    @torch.no_grad()
    def act(self, observation: dict, instruction: str | None = None) -> np.ndarray:
        """(n, C) absolute actions for `observation` (n = execute_steps, or the whole chunk)."""
        frames = self._current_frames(observation)
        batch = self._inputs(observation, frames, instruction)
        key = rng.fold_in(self._key, self._calls)
        chunk = vla.sample_actions(
            self.params,
            self.cfg,
            batch,
            key=key,
            steps=self.sample_steps,
            compiled=self.compiled,
            noise_scale=self.noise_scale,
        )[0]
        actions = self.postprocess(chunk, observation)
        self._remember(frames, observation)
        self._calls += 1
        return actions if self.execute_steps is None else actions[: self.execute_steps]

    def observe(self, observation: dict) -> None:
        """Record an observation the policy does not act on (a step of an executing chunk), so the
        negative image and proprio offsets of the next `act` count env steps, as in training. A model that
        reads no past steps keeps nothing (and preprocesses nothing here)."""
        if self._keep:
            self._remember(self._current_frames(observation), observation)

    @property
    def _keep(self) -> int:
        """Past observations the model reads: the deepest negative image offset or proprio step."""
        return max([-o for o in self.robot.image_offsets] + [self.robot.past_steps, 0])

    def _remember(self, frames: dict[str, np.ndarray], observation: dict) -> None:
        keep = self._keep
        for cam, frame in frames.items():
            self._frames[cam] = ([*self._frames.get(cam, []), frame])[-keep:] if keep else []
        self._proprio = ([*self._proprio, self._current_proprio(observation)])[-keep:] if keep else []
