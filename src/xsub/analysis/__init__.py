"""Analyses that compare subnetworks, one module each (overlap, crosseval, cka, stitch, importance_tsne,
token_overlap); stage=analyze gathers their inputs from the artifact store. They apply masks through
`xsub.subnetwork.masked`; what they share here is the `Result` every analysis returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd


@dataclass
class Result:
    """What an analysis produced: tidy tables (saved as CSV), figures (PNG, already written) and the
    short text table the stage prints."""

    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: dict[str, Path] = field(default_factory=dict)
    summary: str = ""
