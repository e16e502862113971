"""AdamW over parameter trees, with per-path groups (no decay, lr scale, frozen) and global-norm clipping.

Pure at the API: `update` returns new params and a new optimizer state and never mutates its inputs, so it
can sit inside a `torch.compile(fullgraph=True)` train step. Per-step hyperparameters (`lr`, optionally
`wd`) enter as 0-D tensors, so changing them never recompiles. The optimizer object holds only static
per-leaf tables built once from the dotted paths of the params (see `foundry.tree`).

Usage:
    from foundry.train.config import AdamWConfig
    from foundry.train.optim import AdamW, clip_by_global_norm

    opt = AdamW(AdamWConfig(weight_decay=0.1, frozen=(r"^vit\\.",)), params)
    print(opt.describe())
    opt_state = opt.init(params)
    grads, grad_norm = clip_by_global_norm(grads, 1.0)
    params, opt_state = opt.update(grads, opt_state, params, {"lr": torch.tensor(3e-4)})
"""

from __future__ import annotations

import dataclasses
import re

import torch
from torch import Tensor

from foundry import tree
from foundry.train.config import AdamWConfig

Tree = tree.Tree
OptState = dict  # {"mu": Tree, "nu": Tree, "count": Tensor (0-D int64)}


@dataclasses.dataclass(frozen=True)
class _Group:
    """Trainable leaves sharing weight-decay and lr-scale settings: one `_foreach_` call per group."""

    decay: bool
    lr_scale: float
    indices: tuple[int, ...]  # positions in `tree.leaves(params)` order


def _compile_patterns(field: str, patterns: tuple[str, ...]) -> list[re.Pattern[str]]:
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern))
        except re.error as e:
            raise ValueError(f"AdamWConfig.{field}: {pattern!r} is not a valid regex ({e})") from None
    return compiled


def _lr_scale(path: str, scales: list[tuple[re.Pattern[str], float]]) -> float:
    """The multiplier of the first matching (regex, multiplier) pair, else 1."""
    for pattern, scale in scales:
        if pattern.search(path):
            return scale
    return 1.0


class AdamW:
    """AdamW with decoupled weight decay, as `torch.optim.AdamW` (Loshchilov & Hutter, 2019).

    Built once from the config and the params' structure; the leaf tables are derived from dotted paths
    with `re.search`: a leaf is frozen if any `cfg.frozen` pattern matches, undecayed if any `cfg.no_decay`
    pattern matches, and its lr is multiplied by the first matching `cfg.lr_scales` entry.
    """

    def __init__(self, cfg: AdamWConfig, params: Tree):
        self.cfg = cfg
        frozen = _compile_patterns("frozen", cfg.frozen)
        no_decay = _compile_patterns("no_decay", cfg.no_decay)
        scale_patterns = _compile_patterns("lr_scales", tuple(p for p, _ in cfg.lr_scales))
        scales = [(pat, float(s)) for pat, (_, s) in zip(scale_patterns, cfg.lr_scales)]

        pairs = tree.items(params)
        self._paths = tuple(path for path, _ in pairs)
        self._numels = tuple(leaf.numel() for _, leaf in pairs)
        self._structure = tree.structure(params)
        for pat in frozen:
            if not any(pat.search(path) for path in self._paths):
                raise ValueError(
                    f"AdamWConfig.frozen: {pat.pattern!r} matches no parameter; paths look like {list(self._paths[:5])}"
                )
        self._frozen = tuple(any(p.search(path) for p in frozen) for path in self._paths)
        self._decay = tuple(not any(p.search(path) for p in no_decay) for path in self._paths)
        self._lr_scales = tuple(_lr_scale(path, scales) for path in self._paths)
        self._groups = self._build_groups()

    def _build_groups(self) -> tuple[_Group, ...]:
        by_key: dict[tuple[bool, float], list[int]] = {}
        for i, frozen in enumerate(self._frozen):
            if not frozen:
                by_key.setdefault((self._decay[i], self._lr_scales[i]), []).append(i)
        return tuple(_Group(decay, scale, tuple(idx)) for (decay, scale), idx in by_key.items())

    def leaf_settings(self) -> list[tuple[bool, bool, float]]:
        """Per leaf in `tree.leaves(params)` order: (frozen, decayed, lr scale)."""
        return list(zip(self._frozen, self._decay, self._lr_scales))

    def trainable_mask(self) -> list[bool]:
        """Per leaf in `tree.leaves(params)` order: True where the leaf is trained (not frozen)."""
        return [not f for f in self._frozen]

    def init(self, params: Tree) -> OptState:
        """Zero first/second moments in fp32 like each trainable leaf; frozen leaves get `zeros(0)`
        placeholders so the state tree stays parallel to the params tree."""
        self._check_params(params)
        leaves = tree.leaves(params)

        def zeros(i: int) -> Tensor:
            p = leaves[i]
            if self._frozen[i]:
                return torch.zeros(0, dtype=torch.float32, device=p.device)
            return torch.zeros_like(p, dtype=torch.float32)

        mu = tree.unflatten_leaves(params, [zeros(i) for i in range(len(leaves))])
        nu = tree.unflatten_leaves(params, [zeros(i) for i in range(len(leaves))])
        count = torch.zeros((), dtype=torch.int64, device=leaves[0].device if leaves else None)
        return {"mu": mu, "nu": nu, "count": count}

    def update(self, grads: Tree, opt_state: OptState, params: Tree, hp: dict[str, Tensor]) -> tuple[Tree, OptState]:
        """One AdamW step. `hp["lr"]`: 0-D tensor (peak * schedule); `hp["wd"]` (optional) overrides
        `cfg.weight_decay`. `grads` has the params' structure; frozen leaves' grads may be None.
        Returns `(new_params, new_opt_state)`; the inputs are not modified."""
        self._check_params(params)
        p_leaves = tree.leaves(params)
        g_leaves = tree.leaves(grads)
        mu_leaves = list(tree.leaves(opt_state["mu"]))
        nu_leaves = list(tree.leaves(opt_state["nu"]))
        if not (len(g_leaves) == len(mu_leaves) == len(nu_leaves) == len(p_leaves)):
            raise ValueError(
                f"AdamW.update: {len(p_leaves)} params, {len(g_leaves)} grads, {len(mu_leaves)} mu and "
                f"{len(nu_leaves)} nu leaves; grads and opt_state must have the params' structure"
            )
        cfg = self.cfg
        lr = hp["lr"]
        wd = hp.get("wd", cfg.weight_decay)
        count = opt_state["count"] + 1
        step = count.to(torch.float32)
        bias1 = 1 - cfg.b1**step  # 0-D fp32
        bias2_sqrt = (1 - cfg.b2**step).sqrt()  # 0-D fp32

        new_p = list(p_leaves)
        for group in self._groups:
            idx = group.indices
            for i in idx:
                if g_leaves[i] is None:
                    raise ValueError(f"AdamW.update: trainable parameter {self._paths[i]!r} has no gradient")
            p = [p_leaves[i].to(torch.float32) for i in idx]
            g = [g_leaves[i].to(torch.float32) for i in idx]
            group_lr = lr * group.lr_scale if group.lr_scale != 1.0 else lr
            m = [mu_leaves[i] for i in idx]
            v = [nu_leaves[i] for i in idx]
            group_wd = wd if group.decay else None
            p, m, v = _adamw_group(p, g, m, v, cfg, lr=group_lr, wd=group_wd, bias1=bias1, bias2_sqrt=bias2_sqrt)
            for j, i in enumerate(idx):
                new_p[i] = p[j].to(p_leaves[i].dtype)
                mu_leaves[i], nu_leaves[i] = m[j], v[j]

        new_state = {
            "mu": tree.unflatten_leaves(opt_state["mu"], mu_leaves),
            "nu": tree.unflatten_leaves(opt_state["nu"], nu_leaves),
            "count": count,
        }
        return tree.unflatten_leaves(params, new_p), new_state

    def describe(self) -> str:
        """A table `group | lr scale | tensors | params` for logs."""
        rows: dict[tuple[str, str], list[int]] = {}
        for i in range(len(self._paths)):
            if self._frozen[i]:
                key = ("frozen", "-")
            else:
                key = ("decay" if self._decay[i] else "no-decay", f"{self._lr_scales[i]:g}")
            row = rows.setdefault(key, [0, 0])
            row[0] += 1
            row[1] += self._numels[i]
        order = {"decay": 0, "no-decay": 1, "frozen": 2}
        lines = [f"{'group':<10} {'lr scale':>8} {'tensors':>8} {'params':>14}"]
        for (name, scale), (n_tensors, n_params) in sorted(rows.items(), key=lambda kv: order[kv[0][0]]):
            lines.append(f"{name:<10} {scale:>8} {n_tensors:>8} {n_params:>14,}")
        lines.append(f"{'total':<10} {'':>8} {len(self._paths):>8} {sum(self._numels):>14,}")
        return "\n".join(lines)

    def _check_params(self, params: Tree) -> None:
        if tree.structure(params) != self._structure:
            raise ValueError(
                "AdamW: params do not have the structure the optimizer was built for; "
                "build a new AdamW for a new parameter tree"
            )


def _adamw_group(
    p: list[Tensor],
    g: list[Tensor],
    m: list[Tensor],
    v: list[Tensor],
    cfg: AdamWConfig,
    *,
    lr: Tensor,  # 0-D
    wd: float | Tensor | None,  # None: no decay for this group
    bias1: Tensor,  # 0-D: 1 - b1^t
    bias2_sqrt: Tensor,  # 0-D: sqrt(1 - b2^t)
) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
    """The AdamW step of `torch.optim.AdamW` (single-tensor path) on fp32 lists; returns new lists.

    The in-place `_foreach_*_` calls only touch tensors created here, never the inputs."""
    if wd is not None:
        p = torch._foreach_mul(p, 1 - lr * wd)  # decoupled decay: p <- p - lr * wd * p
    m = torch._foreach_lerp(m, g, 1 - cfg.b1)  # m <- b1 m + (1 - b1) g
    v = torch._foreach_mul(v, cfg.b2)
    torch._foreach_addcmul_(v, g, g, value=1 - cfg.b2)  # v <- b2 v + (1 - b2) g^2
    denom = torch._foreach_sqrt(v)
    torch._foreach_div_(denom, bias2_sqrt)
    torch._foreach_add_(denom, cfg.eps)  # sqrt(v / (1 - b2^t)) + eps
    step = torch._foreach_div(m, denom)
    torch._foreach_mul_(step, lr / bias1)
    p = torch._foreach_sub(p, step)
    return p, m, v


def global_norm(grads: Tree) -> Tensor:
    """The L2 norm over all tensor leaves (None leaves skipped), as a 0-D fp32 tensor."""
    norms = [torch.linalg.vector_norm(g, dtype=torch.float32) for g in tree.leaves(grads) if isinstance(g, Tensor)]
    if not norms:
        return torch.zeros((), dtype=torch.float32)
    return torch.linalg.vector_norm(torch.stack(norms))


def clip_by_global_norm(grads: Tree, max_norm: float | Tensor) -> tuple[Tree, Tensor]:
    """Scale `grads` so their global norm is at most `max_norm`; returns `(grads, norm before clipping)`.

    As `torch.nn.utils.clip_grad_norm_`: scale = min(1, max_norm / (norm + 1e-6)), computed without
    data-dependent branching so it compiles with `fullgraph=True`. None leaves stay None."""
    norm = global_norm(grads)
    scale = torch.clamp(max_norm / (norm + 1e-6), max=1.0)  # 0-D fp32
    clipped = tree.map(lambda g: g if g is None else g * scale, grads)
    return clipped, norm
