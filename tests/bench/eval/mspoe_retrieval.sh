#!/usr/bin/env bash
# Ms-PoE on the retrieval task: trains a small Llama (4 layers x 128, 4 heads, positions 2048)
# on the task's own format (`tern data retrieval`), finishing on sequences of 512, then measures
# `tern eval --retrieval` accuracy by length and depth, at 512 (trained) and 1024/2048 (never
# seen), without and with Ms-PoE, and perplexity on held-out contexts of 512 and 2048.
#   tests/bench/eval/mspoe_retrieval.sh WORKDIR            (about 45 minutes on 2 cores)
#   STAGES=eval tests/bench/eval/mspoe_retrieval.sh WORKDIR  (only the measurements)
#   CONFIGS="none 1.2:1.8" ...  (the Ms-PoE settings to measure; "none" = off)
# Prints one JSON line per measurement; the trained model is WORKDIR/model.
# Why the stages (see README.md): with only the eval's 5-digit keys, the copy targets are 5
# tokens of a document and the model sits on the no-retrieval plateau; long keys (5..40 digits)
# on short documents make the copy dense enough for the circuit to form, then 512-token
# documents teach it at the trained length.
set -euo pipefail
work=$1
B=${B:-build/bin}
T="$B/tern"
THREADS=${THREADS:-2}
mkdir -p "$work"
spec() {  # name seq_len batch lr steps [init_from]
  local init=""
  if [ -n "${6:-}" ]; then init=", \"init_from\": \"$6\""; fi
  cat > "$work/$1.json" <<JSON
{
  "name": "mspoe-$1",
  "model": {"model_type": "llama", "vocab_size": 256, "hidden_size": 128,
            "intermediate_size": 384, "num_hidden_layers": 4, "num_attention_heads": 4,
            "num_key_value_heads": 4, "max_position_embeddings": 2048, "rope_theta": 10000,
            "tie_word_embeddings": false},
  "data": {"path": "$work/$1", "seq_len": $2},
  "train_micro_batch_size_per_gpu": $3,
  "optimizer": {"type": "AdamW", "params": {"lr": $4, "betas": [0.9, 0.95], "eps": 1e-8,
                                            "weight_decay": 0.01}},
  "scheduler": {"type": "WarmupCosineLR", "params": {"warmup_num_steps": 50,
                "warmup_type": "linear", "cos_min_ratio": 0.1}},
  "gradient_clipping": 1.0, "steps_per_print": 50, "seed": 1234,
  "train_iters": $5, "eval_interval": 500, "eval_iters": 4,
  "checkpoint": {"dir": "$work/ck-$1", "interval": 500$init}
}
JSON
}
if [ "${STAGES:-all}" = all ]; then
  "$T" data retrieval --output "$work/s128" --seq-len 128 --docs 40000 --key-digits 5:40 --seed 1
  "$T" data retrieval --output "$work/s512" --seq-len 512 --min-length 128 --docs 16000 --key-digits 5:20 --seed 2
  "$T" data retrieval --output "$work/f512" --seq-len 512 --min-length 128 --docs 16000 --key-digits 5:10 --seed 3
  spec s128 128 32 0.002 1500
  spec s512 512 8 0.001 2500 "$work/ck-s128"
  spec f512 512 8 0.0005 2000 "$work/ck-s512"
  for s in s128 s512; do "$T" train "$work/$s.json" --threads "$THREADS" > "$work/train-$s.log"; done
  "$T" train "$work/f512.json" --threads "$THREADS" --save-final "$work/model" > "$work/train-f512.log"
fi
# Held-out contexts for perplexity: 5-digit keys, one document per window.
for L in 512 2048; do
  [ -e "$work/v$L.bin" ] || "$T" data retrieval --output "$work/v$L" --seq-len $L \
    --docs $((102400 / L)) --val-docs 0 --seed $((100 + L)) > /dev/null
done
for cfg in ${CONFIGS:-none 1.2:1.8 1.2:1.8:0 1.5:4 2:4 1.5:4:1 4:4 4:4:0}; do
  extra=(); [ "$cfg" != none ] && extra=(--ms-poe "$cfg")
  "$T" eval --model-dir "$work/model" --retrieval --lengths 512,1024,2048 \
    --depths 0,0.1,0.25,0.5,0.75,0.9,1 --trials "${TRIALS:-50}" --threads "$THREADS" --json \
    "${extra[@]}"
  for L in 512 2048; do
    "$T" eval --model-dir "$work/model" --data "$work/v$L" --seq-len $L --batch 1 \
      --threads "$THREADS" --json "${extra[@]}" |
      python3 -c 'import json,sys; j=json.load(sys.stdin); j["ms_poe"]=sys.argv[1]; j["seq_len"]=int(sys.argv[2]); print(json.dumps(j))' "$cfg" $L
  done
done
