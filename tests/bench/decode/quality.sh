#!/usr/bin/env bash
# What weight-only quantization costs in quality: exports a checkpoint as fp32 and as each
# quantized format and measures perplexity on a validation set with `tern eval`, one JSON line
# per format (nats/token, perplexity, bits/byte, and the ratios to fp32's).
#   tests/bench/decode/quality.sh CKPT VAL_PREFIX [SEQ_LEN] [MAX_WINDOWS]
# e.g. after `tern train config/llama-small.json --set checkpoint.dir=ck` on the fortunes data:
#   tests/bench/decode/quality.sh ck data/fortunes_val 256 0
set -euo pipefail
ckpt=$1
val=$2
seq=${3:-256}
windows=${4:-0}
B=${B:-build/bin}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$B/tern" ckpt export "$ckpt" --out "$out/fp32" > /dev/null
base=""
for f in fp32 fp6 int8 int4; do
  if [ "$f" != fp32 ]; then "$B/tern" ckpt export "$ckpt" --out "$out/$f" --quantize "$f" > /dev/null; fi
  line=$("$B/tern" eval --model-dir "$out/$f" --data "$val" --seq-len "$seq" \
           --max-windows "$windows" --threads "${THREADS:-2}" --json)
  nats=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["nats_per_token"])' "$line")
  [ -z "$base" ] && base=$nats
  python3 -c 'import json,sys; j=json.loads(sys.argv[1]); b=float(sys.argv[2]);
import math; j["bench"]="quantized_quality"; j["nats_over_fp32"]=j["nats_per_token"]/b
j["perplexity_over_fp32"]=math.exp(j["nats_per_token"]-b)
print(json.dumps(j))' "$line" "$base"
done
