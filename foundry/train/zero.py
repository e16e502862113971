"""Sharded optimizer state (ZeRO stage 1, Rajbhandari et al., 2020): each rank keeps the AdamW moments of
one contiguous slice of the flattened trainable parameters.

Why ZeRO-1 here and not FSDP2 (`fully_shard`): the train state is a plain pytree and the step a pure
compiled function; FSDP2 wants an `nn.Module` whose parameters it replaces by DTensors and hooks into
forward/backward, which needs a holder module around the functional model and DTensor-aware optimizer and
checkpoint code (PLATFORM.md). Sharding only the optimizer state keeps params and gradients as ordinary
replicated tensors, so the step, the loss functions and the checkpoint format are unchanged: the update
takes this rank's slice of the (already all-reduced) gradient, runs the same element-wise AdamW on it,
and all-gathers the updated slices into full parameters, all with functional collectives inside the
compiled step. Optimizer-state memory per rank is ~1/world_size of AdamW's; parameters and gradients are
not sharded (for models whose params or grads outgrow a device, FSDP2 is the next step).

Communication: the gradient all-reduce (in the step) plus one all-gather of the params; a reduce-scatter
would halve the gradient traffic but the global-norm clipping needs every gradient, and at this size the
simpler form is measured in bench/README.md.

Checkpoints hold the full AdamW state tree (`to_saved` gathers it, `from_saved` slices it), exactly as
saved by one process, so a run resumes with any world size and with or without sharding.

Usage::

    opt = ShardedAdamW(AdamW(cfg.optimizer, params), params, world)
    opt_state = opt.from_saved(adamw.init(params))     # or opt.init(params)
    params, opt_state = opt.update(grads, opt_state, params, hp)   # inside the step
    full = opt.to_saved(opt_state)                     # on every rank, before rank 0 saves
"""

from __future__ import annotations

import torch
from torch import Tensor

from foundry import tree
from foundry.train.dist import World, all_gather_flat
from foundry.train.optim import AdamW, OptState


class ShardedAdamW:
    """AdamW whose moments live in 1/world_size slices; the `AdamW` API (`init`, `update`, `trainable_mask`)."""

    def __init__(self, base: AdamW, params: tree.Tree, world: World):
        self.base, self.world = base, world
        leaves = tree.leaves(params)
        settings = base.leaf_settings()
        self._trainable = [i for i, (frozen, _, _) in enumerate(settings) if not frozen]
        self._numels = [leaves[i].numel() for i in self._trainable]
        total = sum(self._numels)
        self.shard_size = -(-total // world.size)  # ceil: the last slice is padded
        self.total = total
        lo, hi = world.rank * self.shard_size, (world.rank + 1) * self.shard_size
        decay = torch.cat([torch.full((n,), float(settings[i][1])) for i, n in zip(self._trainable, self._numels)])
        scale = torch.cat([torch.full((n,), settings[i][2]) for i, n in zip(self._trainable, self._numels)])
        device = leaves[0].device
        self._decay = _pad(decay, world.size * self.shard_size)[lo:hi].to(device)  # 1 decayed, 0 not
        self._lr_scale = _pad(scale, world.size * self.shard_size)[lo:hi].to(device)
        self._lo = lo
        self._shapes = [x.shape for x in leaves]
        self._like = tree.map(lambda x: torch.empty(0, device="meta"), params)  # the params' structure only

    def trainable_mask(self) -> list[bool]:
        return self.base.trainable_mask()

    def init(self, params: tree.Tree) -> OptState:
        zeros = torch.zeros(self.shard_size, dtype=torch.float32, device=self._decay.device)
        return {"mu": zeros, "nu": zeros.clone(), "count": torch.zeros((), dtype=torch.int64, device=zeros.device)}

    def update(self, grads: tree.Tree, opt_state: OptState, params: tree.Tree, hp: dict[str, Tensor]):
        """AdamW on this rank's slice, then all-gather the full params (same arithmetic as `AdamW.update`)."""
        cfg = self.base.cfg
        p_leaves, g_leaves = tree.leaves(params), tree.leaves(grads)
        p = self._my_slice([p_leaves[i] for i in self._trainable])
        g = self._my_slice([g_leaves[i] for i in self._trainable])
        lr = hp["lr"] * self._lr_scale
        wd = hp.get("wd", cfg.weight_decay)
        count = opt_state["count"] + 1
        step = count.to(torch.float32)
        bias1 = 1 - cfg.b1**step
        bias2_sqrt = (1 - cfg.b2**step).sqrt()
        p = p * (1 - lr * wd * self._decay)  # decoupled decay on decayed elements only
        m = torch.lerp(opt_state["mu"], g, 1 - cfg.b1)
        v = torch.addcmul(opt_state["nu"] * cfg.b2, g, g, value=1 - cfg.b2)
        p = p - m / ((v.sqrt() / bias2_sqrt) + cfg.eps) * (lr / bias1)
        full = all_gather_flat(p, self.world)[: self.total]
        new_leaves, offset = list(p_leaves), 0
        for i, n in zip(self._trainable, self._numels):
            new_leaves[i] = full[offset : offset + n].reshape(p_leaves[i].shape).to(p_leaves[i].dtype)
            offset += n
        return tree.unflatten_leaves(params, new_leaves), {"mu": m, "nu": v, "count": count}

    def to_saved(self, opt_state: OptState) -> OptState:
        """The full AdamW state tree (collective: call on every rank)."""
        mu = all_gather_flat(opt_state["mu"], self.world)[: self.total]
        nu = all_gather_flat(opt_state["nu"], self.world)[: self.total]
        return {"mu": self._tree(mu), "nu": self._tree(nu), "count": opt_state["count"].clone()}

    def from_saved(self, saved: OptState) -> OptState:
        """This rank's slice of a full AdamW state tree (as saved by `to_saved` or by one process)."""
        mu = self._my_slice([tree.leaves(saved["mu"])[i] for i in self._trainable])
        nu = self._my_slice([tree.leaves(saved["nu"])[i] for i in self._trainable])
        return {"mu": mu.clone(), "nu": nu.clone(), "count": saved["count"].clone()}

    def _my_slice(self, leaves: list[Tensor]) -> Tensor:
        flat = torch.cat([x.float().reshape(-1) for x in leaves])
        return _pad(flat, self.world.size * self.shard_size)[self._lo : self._lo + self.shard_size]

    def _tree(self, flat: Tensor) -> tree.Tree:
        leaves = [torch.zeros(0, dtype=torch.float32, device=flat.device) for _ in self._shapes]  # frozen
        offset = 0
        for i, n in zip(self._trainable, self._numels):
            leaves[i] = flat[offset : offset + n].reshape(self._shapes[i]).clone()
            offset += n
        return tree.unflatten_leaves(self._like, leaves)


def _pad(flat: Tensor, size: int) -> Tensor:
    return torch.cat([flat, flat.new_zeros(size - flat.numel())]) if flat.numel() < size else flat
