"""Causal-LM text sources besides Wikipedia (which `xsub.data.mlm` serves for both kinds).

`flores`: FLORES-200 sentences of one language as a `text` column. FLORES has only dev (997 sentences)
and devtest (1012); the task config names which serves as train (the pruning sample), dev and test
(flores-clm: train = dev, dev = test = devtest). `task.hub_id` picks the source: `facebook/flores`
(the parquet conversion, through xsub.data.parallel) or `openlanguagedata/flores_plus` (gated).
"""

from __future__ import annotations

from typing import Any

import datasets

from xsub.data.mlm import TEXT_FEATURES
from xsub.data.parallel import HUB_SOURCES, load_hub_lang


def load_flores(task: Any, lang: str, split: str, data: Any) -> datasets.Dataset:
    source = "flores_plus" if "flores_plus" in str(task.hub_id or "") else "flores"
    ds = load_hub_lang(source, lang, split, str(getattr(data, "path", "") or ""))
    col = HUB_SOURCES[source].text_col
    texts = [str(t) for t in ds[col] if t]
    return datasets.Dataset.from_dict({"text": texts}, features=TEXT_FEATURES)
