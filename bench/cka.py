"""Streamed feature-space LinearCKA vs the Gram-matrix reference: time, peak memory, agreement.

For a 12-layer, 768-d model shape (13 hidden states with the embeddings) both methods compute linear
and debiased CKA for all 13 x 13 layer pairs of two representations X and Y of the same n sentences:

- stream: `xsub.cka.LinearCKA` fed minibatches (--batch-size rows) generated on the fly;
  memory O((L·d)²), time O(n·(L·d)²).
- gram: materialise all features, cache every X layer's centered n x n Gram matrix (float64), then
  compute each Y layer's Gram once and all its HSICs against the cache; memory O(L·n²), time
  O(L·n²·d). Linear and debiased HSIC both come from one Frobenius product per pair plus the
  diagonals and row sums (see `gram_reference`).

The features are synthetic (seeded, generated per batch so both methods see the same data): a shared
latent z, per-layer emphasis of latent directions and mixing into d dims, per-layer noise, and a large
per-layer offset (a mean of ~50 with a few ~1000 outlier dims, as in transformer hidden states).

Each (method, n) runs in a child process (this script re-invoked with hidden arguments) under
RLIMIT_AS = --mem-limit-gb, so a method that needs more memory fails with an allocation error and is
reported as out of memory instead of taking the machine down; the child reports its own peak RSS
(getrusage RUSAGE_SELF). Children use torch.set_num_threads(--threads) (2 by default: the size of
the development machine). Timings include generating the synthetic data (column "gen s"); on a shared
machine they are noisy.

    python bench/cka.py                       # n = 1k, 10k, 50k; 13 layers x 768
    python bench/cka.py --sizes 1000 10000    # a subset
    python bench/cka.py --quick               # n = 500, 2000; 4 layers x 64: seconds
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

METHODS = ("stream", "gram")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 50000], help="numbers of sentences")
    p.add_argument("--layers", type=int, default=13, help="hidden states per representation")
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--mem-limit-gb", type=float, default=16.0, help="RLIMIT_AS of each child")
    p.add_argument("--batch-size", type=int, default=256, help="rows per LinearCKA.update")
    p.add_argument("--threads", type=int, default=2, help="torch threads in each child")
    p.add_argument("--latent", type=int, default=64, help="dimension of the shared latent")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--quick", action="store_true", help="n = 500, 2000; 4 layers x 64 dims")
    p.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.layers, args.dim = [500, 2000], 4, 64
    return args


class Synthetic:
    """Two related representations X, Y [layers, n, dim] of the same examples, batch by batch.

    Layer l of X is (z * p_l) M_l + σ_l ε + o_l: z a shared latent, p_l a bump over latent
    coordinates that moves with depth (so nearby layers are similar), M_l a random mixing, ε noise,
    o_l a large offset. Y is built the same way from the same z with its own mixings and bumps moved
    by an eighth of the latent, so X-Y CKA peaks off the diagonal and is far from 0 and 1.
    """

    def __init__(self, layers: int, dim: int, latent: int, seed: int) -> None:
        import torch

        self.torch, self.layers, self.dim, self.latent, self.seed = torch, layers, dim, latent, seed
        g = torch.Generator().manual_seed(seed)
        self.mix = torch.randn(2, layers, latent, dim, generator=g) / latent**0.5
        pos = torch.arange(latent, dtype=torch.float32)
        centre = torch.linspace(0, latent - 1, layers)
        centres = torch.stack([centre, (centre + latent / 8).clamp(max=latent - 1)])
        self.profile = torch.exp(-(((pos - centres[..., None]) / (latent / 4)) ** 2)) + 0.05  # [2, L, k]
        depth = torch.linspace(0, 1, layers)
        self.noise = torch.stack([0.3 + 0.7 * depth, 0.6 - 0.3 * depth])[..., None, None]  # [2, L, 1, 1]
        self.offset = 50 + 5 * torch.randn(2, layers, 1, dim, generator=g)
        self.offset[..., : min(4, dim)] += 1000

    def batch(self, index: int, size: int) -> tuple[Any, Any]:
        """Batch `index` (seeded by its index, so any method regenerates the same rows): xs, ys."""
        torch = self.torch
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index + 1)
        z = torch.randn(size, self.latent, generator=g)
        noise = torch.randn(2, self.layers, size, self.dim, generator=g)
        h = torch.matmul(z * self.profile[:, :, None], self.mix) + self.noise * noise + self.offset
        return h[0], h[1]

    def batches(self, n: int, size: int):
        for index, start in enumerate(range(0, n, size)):
            yield start, self.batch(index, min(size, n - start))


def run_stream(data: Synthetic, n: int, batch_size: int) -> tuple[dict[str, Any], float]:
    from xsub.cka import LinearCKA

    metric = LinearCKA(data.layers, data.dim)
    gen = 0.0
    t = time.perf_counter()
    for _, (xs, ys) in data.batches(n, batch_size):
        gen += time.perf_counter() - t
        metric.update(xs, ys)
        t = time.perf_counter()
    return metric.compute(), gen


def gram_reference(xs: Any, ys: Any) -> dict[str, Any]:
    """Linear and debiased CKA [Lx, Ly] of xs [Lx, n, d], ys [Ly, n, d'] from n x n Gram matrices.

    Features are centered first (both CKAs are translation invariant), so each Gram is already
    double-centered. For Grams K, L with diagonals k, l and row sums r, t (1ᵀ from the left):
    tr(KHLH) = <K,L> - 2/n r·t + (1ᵀr)(1ᵀt)/n², and with zeroed diagonals tr(K̃L̃) = <K,L> - k·l,
    1ᵀK̃1 = 1ᵀr - 1ᵀk, 1ᵀK̃L̃1 = (r-k)·(t-l). So each pair costs one Frobenius product <K,L>,
    done for all cached X layers at once as a matrix-vector product.
    """
    import torch

    f64 = torch.float64
    lx, n = xs.shape[:2]

    def gram(feats: Any, out: Any) -> tuple[Any, Any, Any]:
        centered = feats.to(f64)
        centered -= centered.mean(0)
        torch.mm(centered, centered.T, out=out)
        return out.diagonal().clone(), out.sum(1), torch.dot(out.view(-1), out.view(-1))

    cache = torch.empty(lx, n, n, dtype=f64)  # all X layers' centered Grams: L·n²·8 bytes
    diag_k, rows_k, fro_k = (
        torch.empty(lx, n, dtype=f64),
        torch.empty(lx, n, dtype=f64),
        torch.empty(lx, dtype=f64),
    )
    for i in range(lx):
        diag_k[i], rows_k[i], fro_k[i] = gram(xs[i], cache[i])
    other = torch.empty(n, n, dtype=f64)

    def hsics(inner: Any, dk: Any, rk: Any, dl: Any, rl: Any) -> tuple[Any, Any]:
        linear = inner - 2 / n * (rk * rl).sum(-1) + rk.sum(-1) * rl.sum(-1) / n**2
        ones_k, ones_l = rk.sum(-1) - dk.sum(-1), rl.sum(-1) - dl.sum(-1)
        ones_kl = ((rk - dk) * (rl - dl)).sum(-1)
        tr = inner - (dk * dl).sum(-1)
        unbiased = (tr + ones_k * ones_l / ((n - 1) * (n - 2)) - 2 / (n - 2) * ones_kl) / (n * (n - 3))
        return linear, unbiased

    lin_kk, deb_kk = hsics(fro_k, diag_k, rows_k, diag_k, rows_k)
    linear, debiased = torch.empty(lx, ys.shape[0], dtype=f64), torch.empty(lx, ys.shape[0], dtype=f64)
    for j in range(ys.shape[0]):
        diag_l, rows_l, fro_l = gram(ys[j], other)
        inner = cache.view(lx, -1) @ other.view(-1)  # <K_i, L_j> for every i
        lin_kl, deb_kl = hsics(inner, diag_k, rows_k, diag_l[None], rows_l[None])
        lin_ll, deb_ll = hsics(fro_l, diag_l, rows_l, diag_l, rows_l)
        linear[:, j] = lin_kl / torch.sqrt(lin_kk * lin_ll)
        debiased[:, j] = deb_kl / torch.sqrt(deb_kk * deb_ll)
    return {"linear": linear, "debiased": debiased}


def run_gram(data: Synthetic, n: int, batch_size: int) -> tuple[dict[str, Any], float]:
    import torch

    t = time.perf_counter()
    xs = torch.empty(data.layers, n, data.dim)
    ys = torch.empty(data.layers, n, data.dim)
    for start, (bx, by) in data.batches(n, batch_size):
        xs[:, start : start + bx.shape[1]] = bx
        ys[:, start : start + by.shape[1]] = by
    gen = time.perf_counter() - t
    return gram_reference(xs, ys), gen


def rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def child(args: argparse.Namespace) -> None:
    limit = int(args.mem_limit_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import torch

    import xsub.cka  # noqa: F401  (imported before the clock starts: it pulls in torchmetrics)

    torch.set_num_threads(args.threads)
    result: dict[str, Any] = {"status": "ok"}
    try:
        data = Synthetic(args.layers, args.dim, args.latent, args.seed)
        start = time.perf_counter()
        out, gen = (run_stream if args.child == "stream" else run_gram)(data, args.n, args.batch_size)
        result.update(
            seconds=time.perf_counter() - start,
            gen_seconds=gen,
            linear=out["linear"].tolist(),
            debiased=out["debiased"].tolist(),
        )
    except (MemoryError, RuntimeError) as err:  # torch's allocator raises RuntimeError
        if not isinstance(err, MemoryError) and "alloc" not in str(err).lower():
            raise
        result.update(status="oom", error=str(err).splitlines()[0][:200])
    result["rss_gib"] = rss_gib()
    Path(args.result).write_text(json.dumps(result))


def spawn(args: argparse.Namespace, method: str, n: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "result.json"
        cmd = [sys.executable, __file__, "--child", method, "--n", str(n), "--result", str(path)]
        cmd += [
            "--layers",
            str(args.layers),
            "--dim",
            str(args.dim),
            "--mem-limit-gb",
            str(args.mem_limit_gb),
        ]
        cmd += ["--batch-size", str(args.batch_size), "--threads", str(args.threads)]
        cmd += ["--latent", str(args.latent), "--seed", str(args.seed)]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
        proc = subprocess.run(cmd, env=env, check=False)
        if path.exists():
            return json.loads(path.read_text())
        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
        return {"status": f"failed (exit {proc.returncode})", "rss_gib": rss}


def max_diff(a: list[list[float]], b: list[list[float]]) -> float:
    return max(abs(u - v) for ra, rb in zip(a, b) for u, v in zip(ra, rb))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        child(args)
        return
    print(
        f"CKA of {args.layers} x {args.layers} layer pairs, dim {args.dim}, batch {args.batch_size}, "
        f"{args.threads} threads per child, memory limit {args.mem_limit_gb:g} GiB",
        flush=True,
    )
    header = (
        "n",
        "method",
        "seconds",
        "gen s",
        "peak RSS GiB",
        "max|Δ| linear",
        "max|Δ| debiased",
        "gram/stream",
    )
    rows: list[tuple[str, ...]] = []
    ranges = ""
    for n in args.sizes:
        res = {}
        for method in args.methods:
            print(f"  running {method} n={n} ...", file=sys.stderr, flush=True)
            res[method] = spawn(args, method, n)
        both = all(res.get(m, {}).get("status") == "ok" for m in METHODS)
        for method, r in res.items():
            ok = r["status"] == "ok"
            if r["status"] == "oom":
                seconds = f"out of memory (> {args.mem_limit_gb:g} GiB)"
            else:
                seconds = f"{r['seconds']:.2f}" if ok else r["status"]
            extra = ("-", "-", "-")
            if both and method == "gram":
                extra = (
                    f"{max_diff(res['stream']['linear'], r['linear']):.1e}",
                    f"{max_diff(res['stream']['debiased'], r['debiased']):.1e}",
                    f"{r['seconds'] / res['stream']['seconds']:.2f}",
                )
            gen = f"{r['gen_seconds']:.2f}" if ok else "-"
            rows.append((str(n), method, seconds, gen, f"{r['rss_gib']:.2f}", *extra))
            if ok:
                lin, deb = ([v for row in r[k] for v in row] for k in ("linear", "debiased"))
                ranges = (
                    f"n={n} {method}: linear CKA in [{min(lin):.3f}, {max(lin):.3f}], "
                    f"debiased in [{min(deb):.3f}, {max(deb):.3f}]"
                )
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print(" | ".join(cell.ljust(w) for cell, w in zip(row, widths)))
    if ranges:
        print(ranges)


if __name__ == "__main__":
    main()
