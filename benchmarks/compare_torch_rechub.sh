#!/usr/bin/env bash
# Side by side, one run: Torch-RecHub and rechub train the SAME samples (Torch-RecHub's own
# preprocessing of MovieLens, its examples' hyper-parameters) on this machine, one after the other,
# then one JSON line per model with both epoch times and their ratio.
#
#   benchmarks/compare_torch_rechub.sh [--data ../shared/data/ml-100k] [--epochs N] [models...|all|sequence]
#
# Models: the two-tower dssm youtube_dnn youtube_sbc facebook_dssm (the default), the sequence models
# gru4rec narm stamp sasrec and the multi-interest mind comirec_dr comirec_sa sine ("sequence" = these
# eight, "all" = all twelve). --data takes ML-100K (u.data) or ML-1M-format (.dat) folders.
#
# Needs scripts/setup_torch_rechub.sh (benchmarks only) and a built rechub (scripts/setup.sh).
# Time only on a quiet machine: both engines use OpenMP, which spins when the cores are shared.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=../shared/data/ml-100k
EPOCHS=""
MODELS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --data) DATA=$2; shift 2 ;;
    --epochs) EPOCHS=$2; shift 2 ;;
    all) MODELS+=(dssm youtube_dnn youtube_sbc facebook_dssm gru4rec narm stamp sasrec mind comirec_dr comirec_sa sine); shift ;;
    sequence) MODELS+=(gru4rec narm stamp sasrec mind comirec_dr comirec_sa sine); shift ;;
    *) MODELS+=("$1"); shift ;;
  esac
done
[ ${#MODELS[@]} -gt 0 ] || MODELS=(dssm youtube_dnn youtube_sbc facebook_dssm)
if [ -f "$DATA/u.data" ]; then FROM=--from-movielens-100k; else FROM=--from-movielens-1m; fi
scripts/setup_torch_rechub.sh >/dev/null
PY=.venv-torch-rechub/bin/trh-python
RECHUB=${RECHUB:-build/examples/rechub}  # override to use another build
WORK=${WORK:-$(mktemp -d /tmp/rechub-compare.XXXXXX)}
export OMP_NUM_THREADS=2
for m in "${MODELS[@]}"; do
  dir=$WORK/$m
  if [ ! -f "$dir/meta.json" ] && ! $PY benchmarks/torch_rechub/compare.py $FROM "$DATA" --model "$m" --out "$dir" >&2; then
    echo "{\"model\": \"$m\", \"error\": \"export failed (stderr above)\"}"; continue
  fi
  ep=(); [ -n "$EPOCHS" ] && ep=(--epochs "$EPOCHS")
  # one model failing (e.g. a model rechub cannot train from a sample directory yet) reports and moves on
  if ! $PY benchmarks/torch_rechub/compare.py --samples "$dir" "${ep[@]}" | tail -n 1 > "$WORK/$m.torch.json"; then
    echo "{\"model\": \"$m\", \"error\": \"torch-rechub side failed (stderr above)\"}"; continue
  fi
  if ! $RECHUB train --samples "$dir" --threads 2 "${ep[@]}" | tail -n 1 > "$WORK/$m.rechub.json"; then
    echo "{\"model\": \"$m\", \"error\": \"rechub side failed (stderr above)\", \"torch_rechub\": $(cat "$WORK/$m.torch.json")}"; continue
  fi
  python3 - "$WORK/$m.torch.json" "$WORK/$m.rechub.json" <<'PY'
import json, sys
t, r = (json.load(open(p)) for p in sys.argv[1:3])
keys = ["Hit@10", "Hit@50", "Hit@100", "NDCG@10", "NDCG@50", "NDCG@100", "MRR@10", "MRR@50", "MRR@100"]
print(json.dumps({
    "model": r["model"], "samples": r["samples"], "epochs": r["epochs"],
    "torch_rechub_epoch_seconds": t["epoch_seconds_mean"], "rechub_epoch_seconds": r["epoch_seconds_mean"],
    "speedup": t["epoch_seconds_mean"] / r["epoch_seconds_mean"],
    "torch_rechub_samples_per_second": t["samples_per_second"], "rechub_samples_per_second": r["samples_per_second"],
    **{f"torch_rechub_{k}": t[k] for k in keys}, **{f"rechub_{k}": r[k] for k in keys},
    "loadavg_1m": t.get("loadavg_1m")}))
PY
done
