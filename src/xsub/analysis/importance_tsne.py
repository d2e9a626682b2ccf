"""importance_tsne: a 2-D map of the pruning stage's final importance vectors.

As apostolikas/Language-Specific-Subnetworks' figure: a t-SNE (perplexity 10) of the final importance
vectors, coloured by language and marked by task. Each (language, task, seed) pruning run leaves one
importance vector per gate part; if subnetworks were language-specific, vectors of one language would
cluster whatever the task, and if they are task-specific, by task. t-SNE keeps neighbourhoods, not
distances, so the figure answers "who is close to whom", not "how far".

The importances come from the history the pruning stage writes next to each mask
(`seed<s>.history.safetensors`: `round{r}/importance/{part}` and `round{r}/mask/{part}`, float32). The
importance of round r is measured under round r's mask (pruned units keep the value they were last
measured with), so the final round's vector is the one the last pruning decision looked at.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from xsub import plots
from xsub.analysis import Result
from xsub.analysis.inputs import Inputs
from xsub.config import ConfigError

log = logging.getLogger(__name__)

DEFAULT_FIX = "prune first: python -m xsub stage=prune ..."
_KEY = re.compile(r"^round(\d+)/importance/(.+)$")


def used_perplexity(perplexity: float, n: int) -> float:
    """The perplexity t-SNE runs with on n vectors: as asked, or max(1, n - 1) where it is >= n."""
    return float(perplexity) if perplexity < n else float(max(1, n - 1))


def tsne(vectors: np.ndarray, perplexity: float = 10.0, seed: int = 0) -> np.ndarray:
    """2-D t-SNE embedding [n, 2] of `vectors` [n, d] (one row per run), deterministic for a `seed`.

    Why: the original projects embed the final importance vectors with perplexity 10 and look for
    clusters by language or by task. sklearn's TSNE with `init="pca"` and `random_state=seed`.

    t-SNE needs perplexity < n: a larger one is clamped to max(1, n - 1) with a warning (a handful of
    runs with the original perplexity 10). Fewer than 2 vectors raise ValueError; identical vectors
    all map to the origin.
    """
    from sklearn.manifold import TSNE

    x = np.asarray(vectors, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"tsne needs a 2-D array [n, d] of vectors, got shape {tuple(x.shape)}")
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"tsne needs at least 2 vectors to embed, got {n}")
    if not np.isfinite(x).all():
        raise ValueError("tsne: the vectors contain NaN or inf")
    if perplexity <= 0:
        raise ValueError(f"tsne: perplexity must be > 0, got {perplexity}")
    if perplexity >= n:
        clamped = used_perplexity(perplexity, n)
        log.warning("tsne: perplexity %g >= %d samples; using %g", perplexity, n, clamped)
        perplexity = clamped
    if np.all(x == x[0]):  # no neighbourhoods to keep (and sklearn's PCA init divides by a zero std)
        log.warning("tsne: all %d vectors are identical; every point goes to the origin", n)
        return np.zeros((n, 2))
    # PCA initialisation needs two components: with a single feature fall back to a random one.
    init = "pca" if x.shape[1] >= 2 else "random"
    model = TSNE(n_components=2, perplexity=perplexity, init=init, random_state=seed)
    return np.asarray(model.fit_transform(x), dtype=np.float64)


def importance_vectors(
    history_path: str | Path, fix: str = "", at_round: int | None = None
) -> dict[str, np.ndarray]:
    """Per gate part ("head", "mlp", "mlp_units"), the flattened float32 importance of the final round.

    The final round is the highest r with an importance tensor for that part (every round of the
    pruning loop records every part, so this is the loop's last round); `at_round` picks another one. A
    missing file raises ConfigError naming the fix (`fix`, else "prune first: ..."); a file without any
    `round{r}/importance/{part}` tensor, or without the requested round, raises ConfigError too.
    """
    from safetensors.numpy import load_file

    path = Path(history_path)
    if not path.is_file():
        raise ConfigError(f"no pruning history at {path}: {fix or DEFAULT_FIX}")
    tensors = load_file(str(path))
    rounds: dict[str, dict[int, np.ndarray]] = {}
    for key, value in tensors.items():
        match = _KEY.match(key)
        if match:
            rounds.setdefault(match.group(2), {})[int(match.group(1))] = value
    if not rounds:
        raise ConfigError(f"no round*/importance/* tensors in {path}: {fix or DEFAULT_FIX}")
    out: dict[str, np.ndarray] = {}
    for part, by_round in sorted(rounds.items()):
        if at_round is None:
            r = max(by_round)
        elif at_round in by_round:
            r = at_round
        else:
            raise ConfigError(f"round {at_round} not in {path} (rounds {sorted(by_round)} for {part!r})")
        out[part] = np.asarray(by_round[r], dtype=np.float32).reshape(-1)
    return out


def run(inputs: Inputs) -> Result:
    """stage=analyze analysis=importance_tsne: one point per (task, lang, seed) head-importance vector."""
    keys = [(t, lang, s) for t in inputs.tasks for lang in inputs.langs for s in inputs.seeds]
    vectors = [
        importance_vectors(inputs.history_path(*k), fix=f"make it with: {inputs.prune_command(*k)}")["head"]
        for k in keys
    ]
    points = tsne(np.stack(vectors), inputs.an.perplexity, seed=inputs.seeds[0])
    used = used_perplexity(inputs.an.perplexity, len(vectors))
    table = pd.DataFrame(
        [{"task": t, "lang": lang, "seed": s, "x": x, "y": y} for (t, lang, s), (x, y) in zip(keys, points)]
    )
    figure = plots.scatter(
        points,
        inputs.out / "importance_tsne.png",
        color_by=[k[1] for k in keys],
        marker_by=[k[0] for k in keys],
        labels=[f"s{k[2]}" for k in keys] if len(inputs.seeds) > 1 else None,
        title=f"t-SNE of final head importance ({inputs.method}, perplexity {used:g})",
        note=inputs.note(n=f"{len(vectors)} importance vectors")
        + (
            f" · perplexity {inputs.an.perplexity:g} asked, {used:g} used (< n)"
            if used != inputs.an.perplexity
            else ""
        ),
        color_title="language",
        marker_title="task",
    )
    summary = f"t-SNE of {len(keys)} importance vectors ({len(vectors[0])} heads each): {figure.name}"
    return Result({"importance_tsne": table}, {"importance_tsne": figure}, summary)
