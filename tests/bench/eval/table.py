#!/usr/bin/env python3
"""Markdown tables from mspoe_retrieval.sh's JSON lines (stdin): retrieval accuracy by length and
depth for each Ms-PoE setting, then perplexity on held-out contexts."""
import json, sys
rows = [json.loads(l) for l in sys.stdin if l.startswith("{")]
ret = [r for r in rows if r.get("task") == "retrieval"]
ppl = [r for r in rows if "nats_per_token" in r]
depths = sorted({x["depth"] for r in ret for x in r["rows"]})
print("| Ms-PoE | length | " + " | ".join(f"d={d:g}" for d in depths) + " | mean |")
print("|---|---|" + "---|" * (len(depths) + 1))
for r in ret:
    for L in sorted({x["length"] for x in r["rows"]}):
        acc = {x["depth"]: x["accuracy"] for x in r["rows"] if x["length"] == L}
        mean = sum(acc.values()) / len(acc)
        print(f"| {r['ms_poe'] or 'off'} | {L} | " + " | ".join(f"{acc[d]:.2f}" for d in depths) +
              f" | {mean:.2f} |")
print()
print("| Ms-PoE | context | nats/token | perplexity | windows |")
print("|---|---|---|---|---|")
for r in ppl:
    print(f"| {r['ms_poe'] if r['ms_poe'] != 'none' else 'off'} | {r['seq_len']} | "
          f"{r['nats_per_token']:.4f} | {r['perplexity']:.4f} | {r['windows']} |")
