#!/usr/bin/env bash
# The prepared GPU check (docs/performance.md, "GPU"): on a bare lent machine, install the wheels of
# bench/wheels/ that its Python lacks, put the project's src/ on PYTHONPATH and run
# bench/gpu_check.py, which writes gpu_check.json, gpu_check.md (and a loss PNG) to $OUT within
# 8 minutes. The whole output is also kept as $OUT/gpu_check.log.
#
#   bash bench/gpu_check.sh                # GPU sizes, results to $OUT
#   bash bench/gpu_check.sh --cpu-smoke    # toy sizes on CPU (CI); --out DIR when $OUT is unset
#
# Other arguments go to bench/gpu_check.py (--only PARTS, --inline, --precision highest, ...).
# PYTHON names the interpreter (default: python3).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-python3}

out=${OUT:-}
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  if [[ ${args[i]} == --out ]]; then out=${args[i + 1]:-}; fi
  if [[ ${args[i]} == --out=* ]]; then out=${args[i]#--out=}; fi
done
if [[ -z $out ]]; then
  echo "gpu_check.sh: set \$OUT or pass --out DIR" >&2
  exit 2
fi
mkdir -p "$out"

# Wheels for what the device image lacks (pure-python ones, one version each). A package that
# imports already is left alone; the others go to a private folder, not into the image's Python.
site=$(mktemp -d "${TMPDIR:-/tmp}/qgf-gpu-site.XXXXXX")
missing=()
for wheel in "$root"/bench/wheels/*.whl; do
  [[ -e $wheel ]] || continue
  module=$(basename "$wheel" | cut -d- -f1)
  "$python" -c "import $module" 2>/dev/null || missing+=("$wheel")
done
if ((${#missing[@]})); then
  echo "gpu_check.sh: installing ${missing[*]##*/}"
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "${missing[@]}"
fi

export PYTHONPATH="$root/src:$site${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
if [[ " $* " != *" --out"* ]]; then set -- --out "$out" "$@"; fi
"$python" "$root/bench/gpu_check.py" "$@" 2>&1 | tee "$out/gpu_check.log"
