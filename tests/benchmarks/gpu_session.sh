#!/usr/bin/env bash
# One GPU session's MFU measurements, prepared so a short device lease is spent measuring.
#
#   bash tests/benchmarks/gpu_session.sh OUT_DIR [SECONDS]
#
# Runs gpu_mfu.py (GPT-2 124M config, bf16, packed 128-token blocks) in the variants worth
# comparing, each for SECONDS (default 30) after its warm-up, and writes one JSON per variant
# plus the profile of the trainer's own configuration into OUT_DIR. An estimated 8 minutes on
# an H200 at the default, torch.compile's warm-ups included (not yet run on one). Where the
# machine lacks a package, carry wheels in .whl/ (see the device notes): they are installed
# to /tmp/site first.
set -uo pipefail
out=${1:?usage: gpu_session.sh OUT_DIR [SECONDS]}
seconds=${2:-30}
mkdir -p "$out"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit --format=csv | tee "$out/gpu.csv"
run() {  # name, then gpu_mfu.py arguments
  local name=$1; shift
  echo "== $name: $*"
  python3 tests/benchmarks/gpu_mfu.py --out "$out/$name.json" --seconds "$seconds" "$@" \
    > "$out/$name.log" 2>&1 || echo "$name failed (see $name.log)"
  python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(f\"  mfu {r['mfu']:.3f}, {r['tokens_per_s']:,.0f} tok/s\")" "$out/$name.json" 2>/dev/null
}
run b256_model --batch-size 256 --profile 5
run b256_loss --batch-size 256 --compile-scope loss
run b256_loss_autotune --batch-size 256 --compile-scope loss --compile-mode max-autotune-no-cudagraphs
run b512_loss --batch-size 512 --compile-scope loss
