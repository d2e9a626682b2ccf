#!/usr/bin/env bash
# Unstructured subnetworks on the embedded default at full size (issue "Unstructured subnetworks that
# actually differ by language"): Wanda masks of every language from the one multilingual model and their
# cross-language evaluation at equal sparsity (50%), then IMP on one language with its ticket retrained
# from the rewind point, timed. Usage: bench/unstructured.sh [store] [imp languages]
# Prints each command's wall time; the tables are the stages' own output.
set -euo pipefail
A=${1:-/tmp/xsub-bench-unstructured}
IMP_LANGS=${2:-xsvo}
PY=${PYTHON:-python}
t() { local s=$SECONDS; "$@"; echo "wall: $((SECONDS - s)) s  <- ${*: -3}"; }
t $PY -m xsub stage=train task=synth-mlm lang=all paths.artifacts="$A" train.progress=false
t $PY -m xsub stage=train task=synth-cls lang=all paths.artifacts="$A" train.progress=false
t $PY -m xsub stage=prune task=synth-cls lang=all pruning=wanda paths.artifacts="$A"
t $PY -m xsub stage=analyze task=synth-cls lang=all pruning=wanda analysis=crosseval paths.artifacts="$A"
# 20 epochs per segment: one language's 125 steps an epoch leave the 2/3 plateau late (docs/methods.md §7)
t $PY -m xsub stage=prune task=synth-cls lang="$IMP_LANGS" pruning=imp pruning.imp_epochs=20 paths.artifacts="$A" \
  train.progress=false
