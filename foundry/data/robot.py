"""Read robotics shards (written by `foundry.data.robot_write`, which documents the sample members) into
policy batches, via `foundry.data.loader.iterate_batches`.

Reading (`RobotConfig`, torch-free): a batch of B samples is

    images      (B, N_img, 3, S, S) float32   cameras x image_offsets, camera-major, via images.preprocess
                                              (uint8 with uint8_images: see images_to_float)
    proprio     (B, P, Dp) float32            proprio_fields concatenated, steps anchor-P+1 .. anchor
    actions     (B, F, Da) float32            action_fields concatenated, steps anchor .. anchor+F-1: the
                                              chunk INCLUDES the anchor (action[t] is executed at step t)
    past_actions (B, Pa, Da) float32          steps anchor-Pa .. anchor-1, only when past_action_steps > 0
    proprio_mask, action_mask, past_action_mask   (B, steps) bool, False on padding steps
    proprio_dim_mask (B, Dp), action_dim_mask (B, Da) bool   False on the pad_*_dim columns
    valid       (B,) bool                     False for padding rows, skipped and non-finite samples
    instruction_ids, instruction_mask (B, L)  only with a `tokenize` function (the VLA builds its prompt)
    _nonfinite  0-D int64                     samples masked by on_nonfinite="skip"

Instructions are strings, not tensors: one is drawn per sample from the sample's seed (a type among
`instruction_types` that the sample has, then one of its variants). With `tokenize` (picklable,
`str -> list[int]`, e.g. prompt = instruction + <image> placeholders + <obs>) the decoder tokenizes in
the worker; `batch_instructions` recomputes the same strings for any batch (logging, eval).

Usage:

    cfg = RobotConfig(cameras=("scene", "wrist"), image_offsets=(-1, 0), action_horizon=16)
    decode, collate = robot_functions(cfg, batch_size=32, dims=dataset_dims(path, cfg))
    for batch in iterate_batches(plan, batch_size=32, decode=decode, collate=collate, seed=0): ...
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import zipfile
from collections.abc import Callable
from typing import Any, Literal

import numpy as np

from foundry.data.images import MEAN, STD, decode_image, preprocess, resize_square
from foundry.data.manifest import DataError
from foundry.data.normalize import Normalizer
from foundry.data.plan import Plan, sample_seed
from foundry.data.rotations import relative_pose
from foundry.data.shards import ShardFiles, index_dataset, read_sample

MASKS = ("past_mask", "future_mask")  # the window's step masks in `lowdim.npz` (see robot_write)


@dataclasses.dataclass(frozen=True)
class RobotConfig:
    """How robotics samples become batches (see the module docstring). Torch-free; reads no files."""

    action_fields: tuple[str, ...] = ("action",)  # lowdim fields concatenated into the action vector
    proprio_fields: tuple[str, ...] = ("pose",)  # ... into proprioception
    action_horizon: int = 16  # F: actions at anchor .. anchor+F-1 (needs stored future >= F-1)
    past_steps: int = 0  # proprio steps before the anchor: P = past_steps + 1 (needs stored past >= it)
    past_action_steps: int = 0  # Pa: "past_actions" at anchor-Pa .. anchor-1; 0 leaves them out
    cameras: tuple[str, ...] = ("scene",)
    image_offsets: tuple[int, ...] = (0,)
    image_size: int = 224
    image_mode: Literal["crop", "pad"] = "crop"
    # Batch images as uint8 (4x less worker -> trainer traffic); convert with `images_to_float` on the
    # device, bit-identical to `images.preprocess`.
    uint8_images: bool = False
    instruction_types: tuple[str, ...] = ("original",)  # drawn uniformly among those a sample has
    max_instruction_tokens: int = 64  # instruction_ids width (longer token lists are cut), tokenize only
    # Express `relative_fields` (xyz + rot6d + extra columns) relative to `reference_field` at the anchor;
    # their statistics are then "<field>_rel" (see foundry.data.robot_stats).
    relative_actions: bool = False
    relative_fields: tuple[str, ...] = ("action",)
    reference_field: str = "pose"
    # Axes of the relative translation (foundry.data.rotations.relative_pose): "reference" (the end effector's,
    # statistics "<field>_rel") or "world" (the robot base's, as the scene camera sees it; "<field>_delta").
    relative_frame: Literal["reference", "world"] = "reference"
    # Pad action/proprio vectors to this width (0: the data's own), so several robots share one model.
    pad_action_dim: int = 0
    pad_proprio_dim: int = 0
    # "error": NaN/Inf in a used lowdim field is a DataError; "skip": the row is masked and counted.
    on_nonfinite: Literal["error", "skip"] = "error"

    def __post_init__(self) -> None:
        if not self.action_fields or not self.proprio_fields:
            raise ValueError("robot.action_fields and robot.proprio_fields must name at least one field")
        if self.action_horizon < 1 or min(self.past_steps, self.past_action_steps) < 0:
            raise ValueError("robot.action_horizon must be >= 1, past_steps and past_action_steps >= 0")
        if self.relative_actions and (bad := [f for f in self.relative_fields if f not in self.action_fields]):
            raise ValueError(f"robot.relative_fields {bad} are not in robot.action_fields {self.action_fields}")
        if self.image_size < 1 or min(self.pad_action_dim, self.pad_proprio_dim) < 0 or not self.instruction_types:
            raise ValueError("robot.image_size must be >= 1, pad_*_dim >= 0, instruction_types non-empty")
        if self.on_nonfinite not in ("error", "skip"):
            raise ValueError(f"robot.on_nonfinite = {self.on_nonfinite!r}: use 'error' or 'skip'")
        if self.relative_frame not in ("reference", "world"):
            raise ValueError(f"robot.relative_frame = {self.relative_frame!r}: use 'reference' or 'world'")

    @property
    def num_images(self) -> int:
        return len(self.cameras) * len(self.image_offsets)

    def stats_name(self, field: str) -> str:
        """The statistics (and normalizer) name of an action or proprio field."""
        relative = self.relative_actions and field in self.relative_fields
        if not relative:
            return field
        return f"{field}_rel" if self.relative_frame == "reference" else f"{field}_delta"


@dataclasses.dataclass(frozen=True)
class Skipped:
    """What `RobotDecoder` returns for a non-finite sample under on_nonfinite="skip"."""

    reason: str


def anchor_index(past_mask: np.ndarray) -> int:
    """The anchor's window index: the last True of `past_mask`."""
    real = np.flatnonzero(past_mask)
    if len(real) == 0:
        raise DataError("'past_mask' has no True step: the anchor is missing")
    return int(real[-1])


def load_lowdim(data: bytes) -> dict[str, np.ndarray]:
    """The arrays of a `lowdim.npz` member, masks checked; bad data raises `DataError`."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"member 'lowdim.npz' is not a readable npz ({e})") from None
    if missing := [m for m in MASKS if m not in arrays]:
        raise DataError(f"member 'lowdim.npz' lacks {missing}; it has {sorted(arrays)}")
    t = arrays["past_mask"].shape
    for k, a in arrays.items():
        if a.shape[:1] != t or (k in MASKS) != (a.dtype == np.bool_) or (k not in MASKS and a.ndim != 2):
            raise DataError(f"'lowdim.npz' array {k!r} has shape {a.shape} {a.dtype}; masks are ({t[0]},) bool")
    return arrays


def draw_instruction(data: bytes, types: tuple[str, ...], seed: int) -> str:
    """One instruction from a `language_instructions.json` member, drawn by the sample seed."""
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(f"member 'language_instructions.json' is not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise DataError(f"member 'language_instructions.json' must hold an object of lists, got {type(obj).__name__}")
    have = [t for t in types if isinstance(obj.get(t), list) and obj[t]]
    if not have:
        found = {k: len(v) if isinstance(v, list) else type(v).__name__ for k, v in obj.items()}
        raise DataError(f"no instructions of types {list(types)}; the sample has {found}")
    rng = np.random.default_rng(seed)
    choices = obj[have[int(rng.integers(len(have)))]]
    return str(choices[int(rng.integers(len(choices)))])


def _member(sample: dict[str, Any], name: str, what: str) -> Any:
    if name not in sample:
        found = sorted(k for k in sample if not k.startswith("__"))
        raise DataError(f"{what} {name!r} is not in this sample; it has {found}")
    return sample[name]


@dataclasses.dataclass(frozen=True)
class RobotDecoder:
    """`decode(sample, seed)` for `iterate_batches`: arrays of one sample, vectors padded to the batch's
    widths (`action_dim`, `proprio_dim`), normalized per field when a `Normalizer` is given."""

    cfg: RobotConfig
    action_dim: int
    proprio_dim: int
    normalizer: Normalizer | None = None
    tokenize: Callable[[str], list[int]] | None = None

    def __call__(self, sample: dict[str, Any], seed: int) -> dict[str, Any] | Skipped:
        cfg = self.cfg
        lowdim = load_lowdim(_member(sample, "lowdim.npz", "member"))
        a, t = anchor_index(lowdim["past_mask"]), len(lowdim["past_mask"])
        past = max(cfg.past_steps, cfg.past_action_steps)
        if a < past or t - a < cfg.action_horizon:
            raise DataError(
                f"the window stores {a} past and {t - a - 1} future steps; the config needs {past} past "
                f"(past_steps, past_action_steps) and {cfg.action_horizon - 1} future (action_horizon - 1)"
            )
        used = dict.fromkeys(cfg.proprio_fields + cfg.action_fields + (cfg.reference_field,) * cfg.relative_actions)
        fields = sorted(k for k in lowdim if k not in MASKS)
        for f in used:
            if f not in lowdim:
                raise DataError(f"lowdim field {f!r} (robot config) is not in this sample; it has {fields}")
        if bad := [f for f in used if not np.isfinite(lowdim[f]).all()]:
            reason = f"lowdim fields {bad} hold NaN or Inf"
            if cfg.on_nonfinite == "skip":
                return Skipped(reason)
            raise DataError(f"{reason}; set robot.on_nonfinite='skip' to mask such samples")
        real = lowdim["past_mask"] | lowdim["future_mask"]
        groups = [  # batch key, fields, width, offsets from the anchor, step mask key, dim mask key
            ("proprio", cfg.proprio_fields, self.proprio_dim, range(-cfg.past_steps, 1), "proprio"),
            ("actions", cfg.action_fields, self.action_dim, range(cfg.action_horizon), "action"),
            ("past_actions", cfg.action_fields, self.action_dim, range(-cfg.past_action_steps, 0), "past_action"),
        ]
        out: dict[str, Any] = {}
        for key, names, width, offsets, mask in groups[: 2 + (cfg.past_action_steps > 0)]:
            rows = a + np.asarray(offsets, dtype=np.int64)
            vec = np.concatenate([self._field(lowdim, f, a, rows, offsets) for f in names], -1)  # (n, C)
            if vec.shape[-1] > width:
                knob = "pad_proprio_dim" if key == "proprio" else "pad_action_dim"
                raise DataError(f"{key} {names} have {vec.shape[-1]} dims > {width}: set robot.{knob} >= them")
            out[key] = np.pad(vec, ((0, 0), (0, width - vec.shape[-1])))
            out[f"{mask}_mask"] = real[rows]
            out[f"{mask.removeprefix('past_')}_dim_mask"] = np.arange(width) < vec.shape[-1]
        images = [self._image(sample, cam, off) for cam in cfg.cameras for off in cfg.image_offsets]
        out["images"] = np.stack(images) if images else np.zeros((0, 3, cfg.image_size, cfg.image_size), np.float32)
        lang = _member(sample, "language_instructions.json", "member")
        out["instruction"] = draw_instruction(lang, cfg.instruction_types, seed)
        if self.tokenize is not None:
            out["instruction_ids"] = np.asarray(self.tokenize(out["instruction"]), dtype=np.int64)
        return out

    def _field(self, lowdim: dict[str, np.ndarray], f: str, a: int, rows: np.ndarray, offsets: range) -> np.ndarray:
        values = lowdim[f][rows].astype(np.float32)  # (n, C)
        if self.cfg.relative_actions and f in self.cfg.relative_fields and len(rows):
            ref = lowdim[self.cfg.reference_field][a]
            if min(ref.shape[-1], values.shape[-1]) < 9:
                raise DataError(f"relative fields need xyz + rot6d (>= 9 columns): {f!r} {values.shape}, "
                                f"{self.cfg.reference_field!r} {ref.shape}")  # fmt: skip
            values = relative_pose(ref, values, self.cfg.relative_frame)
        if self.normalizer is not None and len(rows):
            values = self.normalizer.normalize(values, self.cfg.stats_name(f), offsets=offsets)
        return values

    def _image(self, sample: dict[str, Any], cam: str, off: int) -> np.ndarray:
        name = f"{cam}_t{off}.jpg"
        img = decode_image(_member(sample, name, "image"), where=f"image {name!r}")
        if self.cfg.uint8_images:
            return resize_square(img, self.cfg.image_size, self.cfg.image_mode).transpose(2, 0, 1)
        return preprocess(img, size=self.cfg.image_size, mode=self.cfg.image_mode)


def images_to_float(images: Any) -> Any:
    """uint8 images (`uint8_images=True`, a tensor on any device) -> float32 exactly as `preprocess`."""
    return (images.float() / 255.0 - MEAN) / STD


@dataclasses.dataclass(frozen=True)
class RobotCollate:
    """`collate(decoded)` -> the batch of the module docstring; None and `Skipped` are masked rows."""

    cfg: RobotConfig
    batch_size: int
    action_dim: int
    proprio_dim: int
    tokenized: bool = False
    pad_id: int = 0

    def __call__(self, decoded: list[dict[str, Any] | Skipped | None]) -> dict[str, Any]:
        import torch  # keeps this module (and RobotConfig) torch-free at import

        cfg, b = self.cfg, self.batch_size
        if len(decoded) != b:
            raise ValueError(f"robot collate got {len(decoded)} samples for a batch of {b}")
        s, f, a, p = cfg.image_size, cfg.action_horizon, self.action_dim, self.proprio_dim
        shapes = {
            "images": ((b, cfg.num_images, 3, s, s), np.uint8 if cfg.uint8_images else np.float32),
            "proprio": ((b, cfg.past_steps + 1, p), np.float32),
            "proprio_mask": ((b, cfg.past_steps + 1), bool),
            "proprio_dim_mask": ((b, p), bool),
            "actions": ((b, f, a), np.float32),
            "action_mask": ((b, f), bool),
            "action_dim_mask": ((b, a), bool),
        }
        if cfg.past_action_steps:
            shapes |= {"past_actions": ((b, cfg.past_action_steps, a), np.float32)}
            shapes |= {"past_action_mask": ((b, cfg.past_action_steps), bool)}
        if self.tokenized:
            shapes |= {"instruction_ids": ((b, cfg.max_instruction_tokens), np.int64)}
            shapes |= {"instruction_mask": ((b, cfg.max_instruction_tokens), bool)}
        out = {k: np.zeros(shape, dtype) for k, (shape, dtype) in shapes.items()}
        if self.tokenized:
            out["instruction_ids"][:] = self.pad_id
        valid = np.zeros(b, bool)
        for i, d in enumerate(decoded):
            if not isinstance(d, dict):  # None (padding, bad sample) or Skipped: a fully masked row
                continue
            valid[i] = True
            for k in shapes.keys() - {"instruction_ids", "instruction_mask"}:
                out[k][i] = d[k]
            if self.tokenized:
                ids = d["instruction_ids"][: cfg.max_instruction_tokens]
                out["instruction_ids"][i, : len(ids)], out["instruction_mask"][i, : len(ids)] = ids, True
        batch = {k: torch.from_numpy(v) for k, v in out.items()}
        batch["valid"] = torch.from_numpy(valid)
        batch["_nonfinite"] = torch.tensor(sum(isinstance(d, Skipped) for d in decoded), dtype=torch.int64)
        return batch


def robot_functions(
    cfg: RobotConfig,
    *,
    batch_size: int,
    dims: tuple[int, int] | None = None,
    normalizer: Normalizer | None = None,
    tokenize: Callable[[str], list[int]] | None = None,
    pad_id: int = 0,
) -> tuple[RobotDecoder, RobotCollate]:
    """Decode and collate for batches of `batch_size` samples.

    `dims` = (action_dim, proprio_dim) of the data (`dataset_dims`); `cfg.pad_*_dim`, when set, wins.
    `normalizer` must hold every field's statistics name (`cfg.stats_name`); `tokenize` adds
    `instruction_ids` padded with `pad_id`.
    """
    action_dim = cfg.pad_action_dim or (dims[0] if dims else 0)
    proprio_dim = cfg.pad_proprio_dim or (dims[1] if dims else 0)
    if not action_dim or not proprio_dim:
        raise ValueError("give dims=dataset_dims(path, cfg) or set robot.pad_action_dim and pad_proprio_dim")
    if normalizer is not None:
        names = [cfg.stats_name(f) for f in cfg.proprio_fields + cfg.action_fields]
        if missing := [n for n in names if n not in normalizer.center]:
            raise ValueError(f"the normalizer lacks {missing}; it has {sorted(normalizer.center)} (run robot_stats)")
    decode = RobotDecoder(cfg, action_dim, proprio_dim, normalizer, tokenize)
    return decode, RobotCollate(cfg, batch_size, action_dim, proprio_dim, tokenize is not None, pad_id)


def dataset_dims(path: str | os.PathLike, cfg: RobotConfig) -> tuple[int, int]:
    """(action_dim, proprio_dim) of a dataset, from the lowdim widths of its first sample."""
    index = index_dataset(path)
    shard = next((s for s in index.shards if len(s)), None)
    if shard is None:
        raise DataError(f"dataset {index.manifest} holds no samples")
    with ShardFiles() as files:
        lowdim = load_lowdim(_member(read_sample(shard, 0, files), "lowdim.npz", "member"))
    fields = sorted(k for k in lowdim if k not in MASKS)
    if missing := [f for f in cfg.action_fields + cfg.proprio_fields if f not in lowdim]:
        raise DataError(f"shard {shard.path}: lowdim fields {missing} (robot config) not found; it has {fields}")
    width = lambda names: sum(lowdim[f].shape[-1] for f in names)
    return width(cfg.action_fields), width(cfg.proprio_fields)


def batch_instructions(plan: Plan, batch: int, *, batch_size: int, cfg: RobotConfig, seed: int) -> list[str | None]:
    """The instructions `RobotDecoder` draws for batch `batch` of `plan` (None for padding rows)."""
    out: list[str | None] = [None] * batch_size
    with ShardFiles() as files:
        for j, i in enumerate(range(batch * batch_size, min((batch + 1) * batch_size, len(plan)))):
            ref = plan.ref(i)
            shard = plan.datasets[ref.dataset].shards[ref.shard]
            lang = _member(read_sample(shard, ref.sample, files), "language_instructions.json", "member")
            out[j] = draw_instruction(lang, cfg.instruction_types, sample_seed(seed, ref.position))
    return out
