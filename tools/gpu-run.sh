#!/usr/bin/env bash
# One prepared GPU run of the book: install offline, then every chapter's quick profile on CUDA and the GPU
# chapter's full profile, with their claim tests; results, executed notebooks and a timing table land in
# OUT as they finish (tools/gpu_run.py says what, in which order, and how a cut-off run still returns).
#
#   On a CPU machine with a network, from the project's root:
#       ../shared/tools/device-prep.sh pytest      # .whl/ (Python 3.12 wheels, pytest for the claim tests), .data/
#   take the tree with .whl and .data to the GPU machine (Python 3.12 with torch, no Jupyter stack), then:
#       tools/gpu-run.sh OUT                        # fits in nine minutes on one H100 (BUDGET_S=540)
#
# Environment (defaults in brackets):
#   PY [python3]      the interpreter that has torch        WHEELS [.whl]   the wheelhouse to install from
#   SITE [/tmp/dltricks-site]  where the wheels go          INSTALL [1]     0: use what PY already has
#   BUDGET_S [540]    seconds for the run, install excluded  DEVICE [cuda]
#   FULL_PROFILE [full], QUICK_PROFILE [quick], FULL [gpu], CHAPTERS [all, most valuable first], JOBS [3]
#   FULL_LIMIT_S [300] at most this long for the full profile; PREFLIGHT_ONLY [0] 1: stop after the preflight
# The CPU rehearsal (tests/test_gpu_run.py) runs this with INSTALL=1 on a Python 3.12 without torch
# (PREFLIGHT_ONLY=1) and with INSTALL=0 on the project's venv, DEVICE=cpu and the smoke profile.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
out=${1:?usage: tools/gpu-run.sh OUT}
mkdir -p "$out"
out=$(cd "$out" && pwd)
PY=${PY:-python3}
WHEELS=${WHEELS:-.whl}
SITE=${SITE:-/tmp/dltricks-site}
t0=$(date +%s)
exec > >(tee -a "$out/run.log") 2>&1  # everything this run prints, also in OUT

echo "[gpu-run] $(date -u +%FT%TZ) python: $($PY -c 'import sys; print(sys.version.split()[0], sys.executable)')"
if [ "${INSTALL:-1}" = 1 ]; then
  ls "$WHEELS"/*.whl >/dev/null 2>&1 || { echo "[gpu-run] no wheels in $WHEELS: run device-prep.sh first"; exit 2; }
  # --no-deps: the wheelhouse is complete (device-prep resolved it for Python 3.12); --target leaves the
  # device's own packages (torch, numpy, ...) untouched.
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl
  export PYTHONPATH="$SITE:$root/companion"
  # The kernel papermill starts: this interpreter, inheriting PYTHONPATH ($JUPYTER_DATA_DIR decides where).
  $PY -m ipykernel install --user --name python3 --display-name "Python 3" >/dev/null
else
  export PYTHONPATH="$root/companion${PYTHONPATH:+:$PYTHONPATH}"
fi
echo "[gpu-run] installed in $(( $(date +%s) - t0 )) s"
[ -d "$root/.data" ] && export DLTRICKS_DATA="${DLTRICKS_DATA:-$root/.data}"
export PYTHONUNBUFFERED=1 DLTRICKS_THREADS="${DLTRICKS_THREADS:-1}"

args=(--out "$out" --budget-s "${BUDGET_S:-540}" --device "${DEVICE:-cuda}" --full-profile "${FULL_PROFILE:-full}"
      --quick-profile "${QUICK_PROFILE:-quick}" --full "${FULL-gpu}" --jobs "${JOBS:-3}"
      --full-limit-s "${FULL_LIMIT_S:-300}")
[ -n "${CHAPTERS:-}" ] && args+=(--chapters "$CHAPTERS")
[ "${PREFLIGHT_ONLY:-0}" = 1 ] && args+=(--preflight-only)
$PY tools/gpu_run.py "${args[@]}"
