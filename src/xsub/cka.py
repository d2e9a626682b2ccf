"""Linear CKA and debiased CKA between every layer of two representations, exact and bounded in memory.

CKA (Kornblith et al. 2019) compares two representations X (n x dx) and Y (n x dy) of the same n
examples through their linear Gram matrices K = X Xᵀ and L = Y Yᵀ:

    CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))

- linear (biased HSIC): HSIC = tr(K H L H) / (n-1)², H = I - 11ᵀ/n. With column-centered Xc, Yc this
  is ||Xcᵀ Yc||²_F / (n-1)², so it needs only Xᵀ Y, the column sums and n.
- debiased (unbiased HSIC of Song et al. 2012, as in Nguyen et al. 2020 and Kornblith's
  `feature_space_linear_cka(..., debiased=True)`): with K̃, L̃ the Grams with zeroed diagonals,

      HSIC_u = [tr(K̃ L̃) + 1ᵀK̃1 · 1ᵀL̃1 / ((n-1)(n-2)) - 2/(n-2) · 1ᵀK̃L̃1] / (n(n-3)),

  and every term is a function of feature-space sums. With a_i = ||x_i||², b_i = ||y_i||²,
  s_x = Σ x_i, s_y = Σ y_i:
      tr(K̃ L̃)  = ||Xᵀ Y||²_F - Σ a_i b_i
      1ᵀK̃1     = ||s_x||² - Σ a_i
      1ᵀK̃L̃1   = s_xᵀ (Xᵀ Y) s_y - (Σ a_i y_i)·s_y - (Σ b_i x_i)·s_x + Σ a_i b_i.

`LinearCKA` accumulates exactly these sums (float64), so its memory is O((Lx·dx)(Ly·dy)) whatever
the number of examples -- no n x n Gram matrix, no stored features -- and the result equals the
Gram-matrix formulas (`gram_cka`) up to float64 rounding. Transformer hidden states have large means,
and the raw sums above would cancel catastrophically, so the features are first shifted by a
provisional center (the mean of the first batch): linear CKA then centers exactly (Xᵀ Y - n μx μyᵀ of
the shifted data) and the unbiased HSIC is translation invariant (checked in tests/test_cka.py), so
the shift changes nothing but the rounding. States that were accumulated around different centers
(other processes, `merge_state`, `forward`) are moved to a common center before they are added: every
statistic above is a polynomial in the features, so the shifted sums follow from the stored ones.

A representation that is constant over the examples has zero variance: HSIC(K, K) = 0 and its CKA
is 0/0 = NaN. (It is exactly NaN for float32/bf16/fp16 inputs, for which the provisional center
equals the constant bit for bit; an embedding-layer [CLS] vector with "first" pooling is an example.)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.utilities.distributed import gather_all_tensors

# Sufficient statistics (n int64, the sums float64), summed across processes; shapes in `LinearCKA.__init__`.
_STATS = ("n", "sx", "sy", "xy", "xx", "yy", "sa", "sb", "aa", "bb", "ab", "ax", "by", "ay", "bx")


def gram_cka(x: Tensor, y: Tensor, debiased: bool = False) -> float:
    """Textbook CKA of x [n, d] and y [n, d'] from the n x n linear Gram matrices (the reference).

    The formulas are applied literally, so features with large means lose precision to
    cancellation here (not in `LinearCKA`); center them first when that matters.
    """
    x, y = x.double(), y.double()
    n = x.shape[0]
    if y.shape[0] != n:
        raise ValueError(f"x and y need the same number of rows, got {n} and {y.shape[0]}")
    gram_x, gram_y = x @ x.T, y @ y.T
    if debiased:
        if n < 4:
            raise ValueError(f"debiased CKA needs at least 4 examples, got {n}")

        def hsic(k: Tensor, m: Tensor) -> Tensor:
            k, m = k.clone().fill_diagonal_(0), m.clone().fill_diagonal_(0)
            ones = torch.ones(n, dtype=k.dtype)
            return (
                torch.trace(k @ m)
                + k.sum() * m.sum() / ((n - 1) * (n - 2))
                - 2 / (n - 2) * (ones @ k @ m @ ones)
            ) / (n * (n - 3))
    else:
        h = torch.eye(n, dtype=x.dtype) - 1 / n

        def hsic(k: Tensor, m: Tensor) -> Tensor:
            return torch.trace(k @ h @ m @ h) / (n - 1) ** 2

    return float(hsic(gram_x, gram_y) / torch.sqrt(hsic(gram_x, gram_x) * hsic(gram_y, gram_y)))


def _shifted(s: Mapping[str, Tensor], dx: Tensor, dy: Tensor) -> dict[str, Tensor]:
    """The statistics `s` of features x̂, ŷ re-expressed for x̂ + dx, ŷ + dy (dx [Lx, dx], dy [Ly, dy]).

    Notation: u = x̂·dx, v = ŷ·dy per layer, q = ||dx||², r = ||dy||², so a' = a + 2u + q.
    """
    n = s["n"].to(torch.float64)
    lx, ly, ex, ey = dx.shape[0], dy.shape[0], dx.shape[1], dy.shape[1]
    sx, sy, sa, sb = s["sx"], s["sy"], s["sa"], s["sb"]
    xy4 = s["xy"].view(lx, ex, ly, ey)
    q, r = (dx * dx).sum(-1), (dy * dy).sum(-1)
    su, sv = (sx * dx).sum(-1), (sy * dy).sum(-1)  # Σ u, Σ v
    xx_d = torch.einsum("lij,lj->li", s["xx"], dx)  # Σ x̂ u
    yy_d = torch.einsum("mij,mj->mi", s["yy"], dy)  # Σ ŷ v
    uu, vv = (dx * xx_d).sum(-1), (dy * yy_d).sum(-1)  # Σ u², Σ v²
    au, bv = (s["ax"] * dx).sum(-1), (s["by"] * dy).sum(-1)  # Σ a u, Σ b v
    xy_v = torch.einsum("lamb,mb->lam", xy4, dy)  # Σ x̂_l v_m
    xy_u = torch.einsum("lamb,la->lmb", xy4, dx)  # Σ u_l ŷ_m
    uv = torch.einsum("lam,la->lm", xy_v, dx)  # Σ u_l v_m
    av = torch.einsum("lmb,mb->lm", s["ay"].view(lx, ly, ey), dy)  # Σ a_l v_m
    ub = torch.einsum("mla,la->lm", s["bx"].view(ly, lx, ex), dx)  # Σ u_l b_m
    sa_new, sb_new = sa + 2 * su + n * q, sb + 2 * sv + n * r
    flat_dx, flat_dy, flat_sx, flat_sy = dx.reshape(-1), dy.reshape(-1), sx.reshape(-1), sy.reshape(-1)
    return {
        "n": s["n"],
        "sx": sx + n * dx,
        "sy": sy + n * dy,
        "xy": s["xy"]
        + torch.outer(flat_dx, flat_sy)
        + torch.outer(flat_sx, flat_dy)
        + n * torch.outer(flat_dx, flat_dy),
        "xx": s["xx"] + _sym_outer(dx, sx) + n * dx[:, :, None] * dx[:, None, :],
        "yy": s["yy"] + _sym_outer(dy, sy) + n * dy[:, :, None] * dy[:, None, :],
        "sa": sa_new,
        "sb": sb_new,
        "aa": s["aa"] + 4 * au + 4 * uu + 2 * q * sa + 4 * q * su + n * q * q,
        "bb": s["bb"] + 4 * bv + 4 * vv + 2 * r * sb + 4 * r * sv + n * r * r,
        "ab": s["ab"]
        + 2 * av
        + r[None] * sa[:, None]
        + 2 * ub
        + 4 * uv
        + 2 * r[None] * su[:, None]
        + q[:, None] * sb[None]
        + 2 * q[:, None] * sv[None]
        + n * q[:, None] * r[None],
        "ax": s["ax"] + 2 * xx_d + q[:, None] * sx + dx * sa_new[:, None],
        "by": s["by"] + 2 * yy_d + r[:, None] * sy + dy * sb_new[:, None],
        "ay": (
            s["ay"].view(lx, ly, ey)
            + 2 * xy_u
            + q[:, None, None] * sy[None]
            + dy[None] * sa_new[:, None, None]
        ).reshape(lx, ly * ey),
        "bx": (
            s["bx"].view(ly, lx, ex)
            + 2 * xy_v.permute(2, 0, 1)
            + r[:, None, None] * sx[None]
            + dx[None] * sb_new[:, None, None]
        ).reshape(ly, lx * ex),
    }


def _sym_outer(d: Tensor, s: Tensor) -> Tensor:
    """d sᵀ + s dᵀ per layer ([L, k] -> [L, k, k])."""
    return d[:, :, None] * s[:, None, :] + s[:, :, None] * d[:, None, :]


class LinearCKA(Metric):
    """Linear and debiased CKA between every layer of X and every layer of Y, streamed over batches.

    `update(xs, ys)`: xs [Lx, B, dx] and ys [Ly, B, dy] are the representations of the same B
    examples (row-aligned). `compute()` -> {"linear": [Lx, Ly], "debiased": [Lx, Ly]} float64 on the
    metric's device. Memory: the (Lx·dx) x (Ly·dy) cross-product block dominates (8 bytes per entry,
    0.8 GB for 13 x 768 on both sides), independent of the number of examples. Each update costs
    about 2·B·(Lx·dx)·(Ly·dy) float64 FLOP and reads and writes that block once, so feed batches of
    a few hundred rows. Debiased CKA needs n >= 4 (compute raises otherwise); a constant layer gives
    NaN. Prefer `update` to `forward`: forward also copies the state and computes a per-batch CKA.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        num_layers_x: int,
        dim_x: int,
        num_layers_y: int | None = None,
        dim_y: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        lx, ex = num_layers_x, dim_x
        ly = num_layers_x if num_layers_y is None else num_layers_y
        ey = dim_x if dim_y is None else dim_y
        if min(lx, ex, ly, ey) < 1:
            raise ValueError(f"layer counts and dims must be positive, got {(lx, ex, ly, ey)}")
        self.num_layers_x, self.dim_x, self.num_layers_y, self.dim_y = lx, ex, ly, ey
        shapes: dict[str, tuple[int, ...]] = {
            "sx": (lx, ex),  # Σ x̂ per layer
            "sy": (ly, ey),
            "xy": (lx * ex, ly * ey),  # Σ x̂ ŷᵀ, all layers side by side
            "xx": (lx, ex, ex),  # Σ x̂ x̂ᵀ per layer
            "yy": (ly, ey, ey),
            "sa": (lx,),  # Σ a, a = ||x̂||² per layer
            "sb": (ly,),
            "aa": (lx,),  # Σ a²
            "bb": (ly,),
            "ab": (lx, ly),  # Σ a_l b_m
            "ax": (lx, ex),  # Σ a_l x̂_l
            "by": (ly, ey),
            "ay": (lx, ly * ey),  # Σ a_l ŷ_m
            "bx": (ly, lx * ex),  # Σ b_m x̂_l
        }
        self.add_state("n", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")
        for name, shape in shapes.items():
            self._add_zeros(name, shape, "sum")
        # Provisional centers (first batch's means). Not reduced: `_sync_dist` and `_reduce_states`
        # move every part to a common center before summing.
        self._add_zeros("center_x", (lx, ex), None)
        self._add_zeros("center_y", (ly, ey), None)

    def _add_zeros(self, name: str, shape: tuple[int, ...], reduce: str | None) -> None:
        """A float64 state that starts at zero, whose default is a one-element view (reset() clones it
        into a full tensor), so the (Lx·dx) x (Ly·dy) default does not double the metric's memory."""
        self.add_state(name, default=torch.zeros(0, dtype=torch.float64), dist_reduce_fx=reduce)
        self._defaults[name] = torch.zeros((), dtype=torch.float64).expand(shape)
        setattr(self, name, torch.zeros(shape, dtype=torch.float64))

    def _compact_defaults(self) -> None:
        for name, default in self._defaults.items():
            if name != "n":
                self._defaults[name] = default.new_zeros(()).expand(default.shape)

    def _apply(self, fn: Callable, exclude_state: Sequence[str] = "") -> nn.Module:
        this = super()._apply(fn, exclude_state)  # moves (and so materialises) the defaults too
        self._compact_defaults()
        return this

    def update(self, xs: Tensor, ys: Tensor) -> None:
        """Add B examples: xs [Lx, B, dx] and ys [Ly, B, dy], row i of both being example i."""
        self._check("xs", xs, self.num_layers_x, self.dim_x)
        self._check("ys", ys, self.num_layers_y, self.dim_y)
        if xs.shape[1] != ys.shape[1]:
            raise ValueError(
                f"xs and ys need the same number of examples, got {xs.shape[1]} and {ys.shape[1]}"
            )
        b = xs.shape[1]
        if b == 0:
            return
        # float64 throughout: exact promotion of float32/bf16 inputs, and the products go straight
        # into the float64 accumulators with addmm_ (beta=1), with no temporary and no extra pass.
        # Measured on a 2-core AMD EPYC for the 13 x 768 case (B=256): float64 addmm_ 0.65 s per
        # batch vs 0.41 s float32 GEMM + 0.47 s to add it into a float64 accumulator -- float32
        # products would be both slower and less exact here.
        x, y = xs.detach().to(torch.float64), ys.detach().to(torch.float64)
        if int(self.n) == 0:
            # sum / b (not mean): for float32 inputs a constant column then gives its exact value
            self.center_x = x.sum(1) / b
            self.center_y = y.sum(1) / b
        x = x - self.center_x[:, None]
        y = y - self.center_y[:, None]
        xf = x.transpose(0, 1).reshape(b, -1)  # [B, Lx·dx]
        yf = y.transpose(0, 1).reshape(b, -1)
        a, bn = (x * x).sum(-1), (y * y).sum(-1)  # [Lx, B], [Ly, B]
        self.n += b
        self.sx += x.sum(1)
        self.sy += y.sum(1)
        self.xy.addmm_(xf.T, yf)
        self.xx.baddbmm_(x.transpose(1, 2), x)
        self.yy.baddbmm_(y.transpose(1, 2), y)
        self.sa += a.sum(1)
        self.sb += bn.sum(1)
        self.aa += (a * a).sum(1)
        self.bb += (bn * bn).sum(1)
        self.ab.addmm_(a, bn.T)
        self.ax += torch.bmm(a[:, None], x)[:, 0]
        self.by += torch.bmm(bn[:, None], y)[:, 0]
        self.ay.addmm_(a, yf)
        self.bx.addmm_(bn, xf)

    def compute(self) -> dict[str, Tensor]:
        """{"linear": CKA [Lx, Ly], "debiased": debiased CKA [Lx, Ly]}, float64."""
        n = int(self.n)
        if n < 4:
            raise ValueError(
                f"LinearCKA needs at least 4 examples (debiased HSIC divides by n(n-3)), got {n}"
            )
        lx, ex, ly, ey = self.num_layers_x, self.dim_x, self.num_layers_y, self.dim_y
        sx, sy = self.sx, self.sy
        lin_xy = sx.new_empty(lx, ly)
        sq_xy = sx.new_empty(lx, ly)  # ||X̂_lᵀ Ŷ_m||²
        sxy_s = sx.new_empty(lx, ly)  # s_xᵀ X̂_lᵀ Ŷ_m s_y
        for i in range(lx):  # one x-layer at a time: temporaries of dx·Ly·dy, not the whole block
            blk = self.xy[i * ex : (i + 1) * ex].view(ex, ly, ey)
            centered = blk - sx[i][:, None, None] * sy[None] / n
            lin_xy[i] = centered.square_().sum((0, 2))
            sq_xy[i] = blk.square().sum((0, 2))
            sxy_s[i] = torch.einsum("a,amb,mb->m", sx[i], blk, sy)
        lin_xx = (self.xx - sx[:, :, None] * sx[:, None, :] / n).square().sum((1, 2))
        lin_yy = (self.yy - sy[:, :, None] * sy[:, None, :] / n).square().sum((1, 2))

        def unbiased(tr: Tensor, ones_k: Tensor, ones_l: Tensor, ones_kl: Tensor) -> Tensor:
            return (tr + ones_k * ones_l / ((n - 1) * (n - 2)) - 2 / (n - 2) * ones_kl) / (n * (n - 3))

        ones_k = (sx * sx).sum(-1) - self.sa  # 1ᵀK̃1
        ones_l = (sy * sy).sum(-1) - self.sb
        ones_kl = (
            sxy_s
            - (self.ay.view(lx, ly, ey) * sy[None]).sum(-1)
            - (self.bx.view(ly, lx, ex) * sx[None]).sum(-1).T
            + self.ab
        )
        hsic_xy = unbiased(sq_xy - self.ab, ones_k[:, None], ones_l[None], ones_kl)
        hsic_xx = unbiased(
            self.xx.square().sum((1, 2)) - self.aa,
            ones_k,
            ones_k,
            torch.einsum("la,lab,lb->l", sx, self.xx, sx) - 2 * (self.ax * sx).sum(-1) + self.aa,
        )
        hsic_yy = unbiased(
            self.yy.square().sum((1, 2)) - self.bb,
            ones_l,
            ones_l,
            torch.einsum("la,lab,lb->l", sy, self.yy, sy) - 2 * (self.by * sy).sum(-1) + self.bb,
        )
        return {
            "linear": lin_xy / torch.sqrt(lin_xx[:, None] * lin_yy[None]),
            "debiased": hsic_xy / torch.sqrt(hsic_xx[:, None] * hsic_yy[None]),
        }

    def _wrap_compute(self, compute: Callable) -> Callable:
        # torchmetrics squeezes one-element results; keep [Lx, Ly] even for 1 x 1
        wrapped = super()._wrap_compute(compute)

        @functools.wraps(compute)
        def shaped(*args: Any, **kwargs: Any) -> dict[str, Tensor]:
            shape = (self.num_layers_x, self.num_layers_y)
            return {k: v.reshape(shape) for k, v in wrapped(*args, **kwargs).items()}

        return shaped

    @staticmethod
    def _check(name: str, t: Tensor, layers: int, dim: int) -> None:
        if t.ndim != 3 or t.shape[0] != layers or t.shape[2] != dim:
            raise ValueError(
                f"{name} must be [{layers}, B, {dim}] (layers, examples, dim), got {list(t.shape)}"
            )
        if not t.is_floating_point():
            raise ValueError(f"{name} must be a float tensor, got {t.dtype}")

    def _recenter(self, center_x: Tensor, center_y: Tensor) -> None:
        """Move this metric's statistics to the given provisional centers."""
        if int(self.n) > 0 and not (
            torch.equal(center_x, self.center_x) and torch.equal(center_y, self.center_y)
        ):
            state = {k: getattr(self, k) for k in _STATS}
            for k, v in _shifted(state, self.center_x - center_x, self.center_y - center_y).items():
                setattr(self, k, v)
        self.center_x, self.center_y = center_x.clone(), center_y.clone()

    def _reduce_states(self, incoming_state: dict[str, Any]) -> None:
        """Add another state (`merge_state`, `forward`), first moving the part with fewer examples
        to the other's center."""
        incoming = dict(incoming_state)
        if int(incoming["n"]) >= int(self.n):
            self._recenter(incoming["center_x"], incoming["center_y"])
        elif int(incoming["n"]) > 0:
            delta_x = incoming["center_x"] - self.center_x
            delta_y = incoming["center_y"] - self.center_y
            incoming.update(_shifted(incoming, delta_x, delta_y))
        for k in _STATS:
            setattr(self, k, getattr(self, k) + incoming[k])

    def _sync_dist(self, dist_sync_fn: Callable = gather_all_tensors, process_group: Any = None) -> None:
        """Sum the statistics across processes after moving them all to the center of the process with
        the most examples."""
        group = process_group or self.process_group
        ns = [int(t) for t in dist_sync_fn(self.n, group=group)]
        centers_x = dist_sync_fn(self.center_x, group=group)
        centers_y = dist_sync_fn(self.center_y, group=group)
        k = ns.index(max(ns))
        self._recenter(centers_x[k], centers_y[k])
        super()._sync_dist(dist_sync_fn, process_group)
        self.center_x, self.center_y = centers_x[k].clone(), centers_y[k].clone()


def state_bytes(layers: int, dim: int) -> int:
    """Memory of one LinearCKA between two [layers, dim] representations (float64 states)."""
    ld = layers * dim
    return 8 * (ld * ld + 2 * layers * dim * dim + 4 * layers * ld + 8 * ld)
