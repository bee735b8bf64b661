#!/usr/bin/env bash
# The main job: install what is missing, build, train a model and retrieve for one user.
# Defaults: DSSM on the built-in synthetic dataset. Override with MODEL=..., DATA=..., OUT=...
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
MODEL=${MODEL:-dssm}
DATA=${DATA:-synthetic}
OUT=${OUT:-runs/${MODEL}-${DATA//[^A-Za-z0-9]/_}}
EPOCHS=${EPOCHS-5}   # a quick demo; the recipe's own default is 20 (EPOCHS= empty uses it)
build/examples/rechub train --model "$MODEL" --data "$DATA" --out "$OUT" ${EPOCHS:+--epochs "$EPOCHS"}
build/examples/rechub retrieve --run "$OUT" --user "${USER_ID:-1}" --k 10
