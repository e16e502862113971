"""Many processes: torch.distributed from the `torchrun` environment, and the few collectives training needs.

A single process needs none of this: with no `WORLD_SIZE` in the environment nothing is initialised and
`current()` is `World(rank=0, size=1)`, for which every collective here is the identity. Under `torchrun`
(RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT set) `session()` starts the default process group
(NCCL for CUDA devices, gloo on CPU) with a timeout, so a rank that dies or stalls ends its peers' waits
with an error instead of a hang, and tears the group down at the end. The process group is the only
state; it is queried from torch.distributed, never kept in a module variable of ours.

Collectives used inside the compiled step are the functional ones (`_functional_collectives`): they
return new tensors instead of mutating, so they trace with `torch.compile(fullgraph=True)`. Measured with
gloo on CPU (torch 2.13): a flat-buffer `all_reduce` inside a `fullgraph=True` function compiles and gives
the eager result, so the train step stays one compiled graph (no split into grad / all-reduce / update).

Usage::

    with dist.session(timeout_s=1800, device="cpu") as world:   # in the entry point (runs.cli)
        world.rank, world.size, world.is_main
        grads = dist.sum_across([g1, g2], world)                # inside or outside compiled code
        dist.barrier(world)
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
import torch.distributed as torch_dist
from torch import Tensor

_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclasses.dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    def __post_init__(self) -> None:
        if self.size < 1 or not 0 <= self.rank < self.size or self.local_rank < 0:
            raise ValueError(f"World(rank={self.rank}, size={self.size}, local_rank={self.local_rank}) is invalid")

    @property
    def is_main(self) -> bool:
        """Rank 0 logs, draws the progress bar and writes the run's shared files."""
        return self.rank == 0


def env_world(environ: Mapping[str, str]) -> World | None:
    """The world described by torchrun's environment variables, or None when WORLD_SIZE is unset.

    Raises ValueError naming the variable that is missing or not an integer."""
    if "WORLD_SIZE" not in environ:
        return None
    if missing := [name for name in _ENV if name not in environ]:
        raise ValueError(
            f"WORLD_SIZE is set but {missing} are not: launch with `torchrun` (it sets {list(_ENV)}) "
            "or unset WORLD_SIZE for a single process"
        )
    values = {}
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        try:
            values[name] = int(environ[name])
        except ValueError:
            raise ValueError(f"environment variable {name}={environ[name]!r} is not an integer") from None
    return World(rank=values["RANK"], size=values["WORLD_SIZE"], local_rank=values["LOCAL_RANK"])


def current() -> World:
    """This process's world from the initialised default process group; a single process otherwise."""
    if not (torch_dist.is_available() and torch_dist.is_initialized()):
        return World()
    return World(rank=torch_dist.get_rank(), size=torch_dist.get_world_size(), local_rank=_local_rank())


def _local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def backend_for(device: str) -> str:
    """NCCL for CUDA devices, gloo for CPU."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def init(*, timeout_s: float, device: str = "cpu", environ: Mapping[str, str] | None = None) -> World:
    """Start the default process group from torchrun's environment (no-op without one) and return the world.

    `timeout_s` bounds every collective: a peer that crashed or hangs makes the others raise after it."""
    world = env_world(os.environ if environ is None else environ)
    if world is None:
        return World()
    if timeout_s <= 0:
        raise ValueError(f"run.dist_timeout_s = {timeout_s} must be > 0")
    if torch_dist.is_initialized():
        raise RuntimeError("the default process group is already initialised (dist.init called twice?)")
    if torch.device(device).type == "cuda":
        torch.cuda.set_device(world.local_rank)  # "cuda" then means this process's GPU
    torch_dist.init_process_group(
        backend_for(device),
        rank=world.rank,
        world_size=world.size,
        timeout=datetime.timedelta(seconds=timeout_s),
    )
    return world


def shutdown() -> None:
    """Destroy the default process group, if one was started."""
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.destroy_process_group()


@contextmanager
def session(*, timeout_s: float, device: str = "cpu") -> Iterator[World]:
    """`init` ... `shutdown` around an experiment's main. An exception on a rank is printed to stderr
    prefixed with that rank (the launcher then stops the other ranks) and re-raised."""
    world = init(timeout_s=timeout_s, device=device)
    try:
        yield world
    except BaseException as e:
        if world.size > 1:
            print(f"rank {world.rank}/{world.size} failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            e.add_note(f"raised on rank {world.rank} of {world.size}")
        raise
    finally:
        shutdown()


def sum_across(tensors: Sequence[Tensor], world: World) -> list[Tensor]:
    """The element-wise sums of `tensors` over all ranks (fp32), as new tensors; one flat-buffer all-reduce.

    Functional (traces inside `torch.compile(fullgraph=True)`); the identity for a single process."""
    if world.size == 1:
        return list(tensors)
    flat = torch.cat([t.float().reshape(-1) for t in tensors])
    summed = _functional().all_reduce(flat, "sum", torch_dist.group.WORLD)
    out, offset = [], 0
    for t in tensors:
        out.append(summed[offset : offset + t.numel()].reshape(t.shape))
        offset += t.numel()
    return out


def all_gather_flat(local: Tensor, world: World) -> Tensor:
    """The 1-D `local` tensors of all ranks concatenated in rank order (functional; equal sizes)."""
    if world.size == 1:
        return local
    return _functional().all_gather_tensor(local, 0, torch_dist.group.WORLD)


def barrier(world: World) -> None:
    """Wait until every rank gets here (no-op for a single process)."""
    if world.size > 1:
        torch_dist.barrier()


def _functional():
    import torch.distributed._functional_collectives as fc  # imported on first use: a private module

    return fc
