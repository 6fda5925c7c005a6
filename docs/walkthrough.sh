#!/usr/bin/env bash
# A newcomer's first day, end to end on a laptop (2 CPU cores, no GPU, no download):
#   phantom -> ingest -> pretrain (short) -> sample -> generate -> train-classifier -> serve -> curl
#
#   bash docs/walkthrough.sh [WORK_DIR]      # default: a fresh temporary folder
#
# Needs the package installed (`make install`, then `. .venv/bin/activate`); BUSGEN overrides the
# command (e.g. BUSGEN="python -m busgen.cli"). About 2 minutes on an idle 2-core machine. Every
# wait is bounded; on exit (success, failure or Ctrl-C) the server gets Ctrl-C, which shuts Serve
# and its local Ray down, and a kill if it is still there 60 s later. tests/e2e/test_walkthrough.py
# runs this script, so it stays true.
set -euo pipefail

BUSGEN=${BUSGEN:-busgen}
WORK=${1:-$(mktemp -d -t busgen-walkthrough-XXXXXX)}
PORT=${PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
URL="http://127.0.0.1:${PORT}"
export BUSGEN_API_TOKEN=${BUSGEN_API_TOKEN:-walkthrough-token-$RANDOM$RANDOM$RANDOM}
export RAY_USAGE_STATS_ENABLED=0
unset RAY_ADDRESS  # every step starts its own local Ray, never a cluster this shell happens to know
mkdir -p "$WORK"
cd "$WORK"
SERVER_PID=""

step() { printf '\n=== %s (%ds)\n' "$1" "$SECONDS"; }

cleanup() {
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -INT "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 60); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 1; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
  fi
}
trap cleanup EXIT

step "1. simulate a phantom data set (class folders, BUSI layout) and ingest it to Parquet"
$BUSGEN phantom --n 150 --size 32 --out data/phantom --seed 0
$BUSGEN ingest data/phantom --out datasets/phantom --size 32

step "2. pretrain the tiny generator for a few steps (Ray Train)"
$BUSGEN pretrain --config pretrain_tiny data_dir=datasets/phantom out=models/tiny \
  storage_path="$WORK/ray_runs" run_name=walkthrough max_steps=30 warmup_steps=5 checkpoint_every=30 log_every=10

step "3. draw a grid of samples per class"
$BUSGEN sample --model models/tiny --out samples.png --per-class 4 --steps 4

step "4. generate a small synthetic set (Ray Data)"
$BUSGEN generate --model models/tiny --out synthetic --n 24 --steps 4 --shard-size 12 --tracking false

step "5. train a servable diagnosis classifier on the real data"
$BUSGEN train-classifier --data-dir datasets/phantom --out models/classifier --width 16 --epochs 3

step "6. serve generator, classifier, reference set and gallery (Ray Serve on 127.0.0.1:${PORT})"
$BUSGEN serve --generator tiny=models/tiny --classifier models/classifier --reference datasets/phantom \
  --gallery synthetic=synthetic --host 127.0.0.1 --port "$PORT" --ray-cpus 2 >serve.log 2>&1 &
SERVER_PID=$!
for _ in $(seq 180); do  # at most ~3 minutes (the first /readyz loads the generator)
  if curl -sf --max-time 5 "$URL/readyz" >/dev/null; then break; fi
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then echo "error: busgen serve exited; its log:"; tail -20 serve.log; exit 1; fi
  sleep 1
done
curl -sf --max-time 5 "$URL/readyz" >/dev/null || { echo "error: not ready; see $WORK/serve.log"; exit 1; }

step "7. ask it: models, a generated image, a classification"
AUTH=(-H "Authorization: Bearer ${BUSGEN_API_TOKEN}")
curl -sf --max-time 30 "${AUTH[@]}" "$URL/v1/models" | tee models.json
echo
curl -sf --max-time 60 "${AUTH[@]}" -H "Content-Type: application/json" \
  -d '{"label": "malignant", "n": 1, "steps": 4, "seed": 7}' "$URL/v1/generate" >generated.json
echo "generate: $(wc -c <generated.json) bytes of JSON (base64 PNG)"
SCAN=$(find data/phantom/benign -name '*.png' ! -name '*_mask*' | head -1)
curl -sf --max-time 60 "${AUTH[@]}" -F "file=@${SCAN};type=image/png" "$URL/v1/classify" | tee classified.json
echo

step "done: every output is under $WORK"
