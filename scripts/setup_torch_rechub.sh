#!/usr/bin/env bash
# Installs the Torch-RecHub side of the side-by-side benchmark (benchmarks/torch_rechub/compare.py).
# Benchmarks only: nothing in the library, its tests or CI needs any of this.
#
#   scripts/setup_torch_rechub.sh            install what is missing, then verify (idempotent)
#   scripts/setup_torch_rechub.sh --check    verify only; exit 1 if anything is missing
#
# What it sets up, and why each choice:
#   * Debian's python3-torch (1.13.1+dfsg), python3-numpy/-pandas/-sklearn/-tqdm, run by /usr/bin/python3:
#     the same stack the Torch-RecHub anchor (shared/anchors/torch-rechub-ml100k.md) was measured on.
#   * libopenblas0-openmp: Debian's torch calls libblas.so.3, and the default one is netlib reference
#     BLAS (2-9x slower per epoch for these models), which would flatter rechub-cpp. The launcher puts
#     the OpenBLAS-openmp directory first on LD_LIBRARY_PATH so torch gets OpenBLAS whatever the
#     update-alternatives setting is, and the verification below proves it (mapped library + timing).
#   * torch-rechub $TRH_VERSION from PyPI, installed with --no-deps into a venv that sees the system
#     site packages, so pip can never pull a second torch; its runtime deps are the Debian packages.
#   * $VENV/bin/trh-python: the launcher to run compare.py with (threads 2, OpenBLAS first).
#
# Environment overrides: RECHUB_TRH_VENV (default <repo>/.venv-torch-rechub, git-ignored),
# RECHUB_TRH_VERSION (default 0.8.0, the version the anchor's source tree carried).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${RECHUB_TRH_VENV:-$REPO/.venv-torch-rechub}"
TRH_VERSION="${RECHUB_TRH_VERSION:-0.8.0}"
PY=/usr/bin/python3
ARCH_LIB="/usr/lib/$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)"
OPENBLAS_DIR="$ARCH_LIB/openblas-openmp"
NETLIB_DIR="$ARCH_LIB/blas"
DEB_PKGS=(python3 python3-venv python3-pip python3-torch python3-numpy python3-pandas python3-sklearn python3-tqdm
          libopenblas0-openmp)
CHECK_ONLY=0
[[ "${1:-}" == "--check" ]] && CHECK_ONLY=1

log() { printf '[setup_torch_rechub] %s\n' "$*"; }
die() { printf '[setup_torch_rechub] ERROR: %s\n' "$*" >&2; exit 1; }

# ---- 1. Debian packages -------------------------------------------------------------------------
missing=()
for p in "${DEB_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  ((CHECK_ONLY)) && die "missing Debian packages: ${missing[*]}"
  [[ $(id -u) == 0 ]] || die "need root to apt-get install: ${missing[*]}"
  log "apt-get install ${missing[*]}"
  apt-get update -qq
  for p in "${missing[@]}"; do
    apt-cache policy "$p" | grep -q 'Candidate: (none)' && die "Debian package $p has no candidate here"
  done
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  log "Debian packages present"
fi
[[ -f "$OPENBLAS_DIR/libblas.so.3" ]] || die "no $OPENBLAS_DIR/libblas.so.3 after installing libopenblas0-openmp"

# ---- 2. venv + torch-rechub ----------------------------------------------------------------------
have_trh() {
  [[ -x "$VENV/bin/python" ]] &&
    "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('torch-rechub') != '$TRH_VERSION')" \
      2>/dev/null
}
if ! have_trh; then
  ((CHECK_ONLY)) && die "torch-rechub $TRH_VERSION not installed in $VENV"
  if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating venv $VENV (--system-site-packages, $PY)"
    "$PY" -m venv --system-site-packages "$VENV"
  fi
  log "pip install --no-deps torch-rechub==$TRH_VERSION"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps "torch-rechub==$TRH_VERSION"
else
  log "torch-rechub $TRH_VERSION present in $VENV"
fi

# ---- 3. launcher -----------------------------------------------------------------------------------
LAUNCHER="$VENV/bin/trh-python"
launcher_text="#!/bin/sh
# Written by scripts/setup_torch_rechub.sh: Debian torch on OpenBLAS (openmp), 2 threads.
export LD_LIBRARY_PATH=\"$OPENBLAS_DIR\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}\"
export OMP_NUM_THREADS=\"\${OMP_NUM_THREADS:-2}\" OPENBLAS_NUM_THREADS=\"\${OPENBLAS_NUM_THREADS:-2}\"
exec \"$VENV/bin/python\" \"\$@\"
"
if [[ ! -x "$LAUNCHER" || "$(cat "$LAUNCHER")" != "${launcher_text%$'\n'}" ]]; then
  ((CHECK_ONLY)) && die "launcher $LAUNCHER missing or stale"
  printf '%s' "$launcher_text" > "$LAUNCHER.tmp" && chmod +x "$LAUNCHER.tmp" && mv "$LAUNCHER.tmp" "$LAUNCHER"
fi

# ---- 4. verify: imports, dependency closure, which BLAS torch really calls, and its speed ---------
# torch-rechub's own requirements (numpy, pandas, scikit-learn, torch, tqdm) must be met by Debian's packages;
# pip check may also list unrelated Debian packages (pygobject wants pycairo), which do not matter here.
if pc="$("$VENV/bin/python" -m pip check --disable-pip-version-check 2>&1)"; then :; else
  grep -i "torch-rechub" <<<"$pc" && die "torch-rechub's requirements are not met by the system packages"
  log "pip check (unrelated to torch-rechub): $(tr '\n' ' ' <<<"$pc")"
fi

probe='
import sys, time, importlib.metadata as md
import numpy, pandas, sklearn, tqdm, torch
import torch_rechub
from torch_rechub.models.matching import DSSM, YoutubeDNN, YoutubeSBC, FaceBookDSSM, GRU4Rec, MIND
from torch_rechub.trainers import MatchTrainer
from torch_rechub.basic.metric import topk_metrics
torch.set_num_threads(2)
a = torch.randn(1024, 1024); b = torch.randn(1024, 1024)
torch.mm(a, b)
best = 1e9
for _ in range(5):
    t = time.perf_counter(); torch.mm(a, b); best = min(best, time.perf_counter() - t)
blas = sorted({l.split()[-1] for l in open("/proc/self/maps") if "/libblas.so" in l or "/libopenblas" in l})
print("python %s (%s)" % (sys.version.split()[0], sys.executable))
print("torch %s  numpy %s  pandas %s  scikit-learn %s  tqdm %s  torch-rechub %s" % (torch.__version__,
      numpy.__version__, pandas.__version__, sklearn.__version__, tqdm.__version__, md.version("torch-rechub")))
print("blas libraries mapped: %s" % ", ".join(blas))
print("sgemm 1024^3 on %d threads: %.1f ms (%.1f GFLOP/s)" % (torch.get_num_threads(), best * 1e3, 2 * 1024**3 / best / 1e9))
'
log "verifying with the launcher (OpenBLAS):"
out_openblas="$("$LAUNCHER" -c "$probe")" || die "the torch / torch-rechub import check failed"
printf '%s\n' "$out_openblas" | sed 's/^/    /'
grep -q "blas libraries mapped: .*openblas-openmp/libblas.so.3" <<<"$out_openblas" ||
  die "torch's libblas.so.3 is not OpenBLAS-openmp"
log "for comparison, netlib reference BLAS (what the default libblas.so.3 may be):"
LD_LIBRARY_PATH="$NETLIB_DIR" OMP_NUM_THREADS=2 "$VENV/bin/python" -c "$probe" | grep -E "blas|sgemm" | sed 's/^/    /' ||
  log "    (netlib BLAS not installed; skipped)"
mkdir -p "$VENV/share"
printf '%s\n' "$out_openblas" > "$VENV/share/versions.txt"
log "ok: run the comparator as  $LAUNCHER $REPO/benchmarks/torch_rechub/compare.py --samples DIR"
