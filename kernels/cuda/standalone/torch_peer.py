"""The PyTorch peer of tern-gpu-bench and tern-gpu-check's quantizer timing (deploy/gpu-check.sh).

The same Llama-shaped decoder in fp32 (TF32 off, as Tern's cuBLAS calls): RMSNorm, fused q|k|v
(GQA), rope, causal scaled_dot_product_attention, output projection, SwiGLU MLP, untied LM head,
cross-entropy; one AdamW step. Then an int8 block quantization written in torch ops next to a
device-to-device copy of the same buffer. Prints one JSON line.
"""
import argparse
import json
import sys


def main():
    p = argparse.ArgumentParser()
    for name, default in [("layers", 4), ("hidden", 2048), ("heads", 16), ("kv-heads", 8),
                          ("ffn", 5632), ("vocab", 32000), ("batch", 4), ("seq", 1024),
                          ("steps", 5)]:
        p.add_argument("--" + name, type=int, default=default)
    p.add_argument("--quant-elems", type=int, default=64 << 20)
    a = p.parse_args()
    try:
        import torch
        import torch.nn.functional as F
    except Exception as e:  # noqa: BLE001
        print(json.dumps({"tool": "torch-peer", "error": f"no torch: {e}"}))
        return 2
    if not torch.cuda.is_available():
        print(json.dumps({"tool": "torch-peer", "error": "torch sees no CUDA device"}))
        return 2
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = torch.device("cuda")
    L, C, NH, NKV, FF, V, B, T = (a.layers, a.hidden, a.heads, a.kv_heads, a.ffn, a.vocab,
                                  a.batch, a.seq)
    HS = C // NH
    QKV = (NH + 2 * NKV) * HS
    torch.manual_seed(0)

    def lin(o, i):
        return torch.nn.Parameter(torch.randn(o, i, device=dev) * 0.02)

    params = {"wte": lin(V, C), "lnf": torch.nn.Parameter(torch.ones(C, device=dev)),
              "lm": lin(V, C)}
    for l in range(L):
        params[f"ln1_{l}"] = torch.nn.Parameter(torch.ones(C, device=dev))
        params[f"wqkv_{l}"] = lin(QKV, C)
        params[f"wo_{l}"] = lin(C, C)
        params[f"ln2_{l}"] = torch.nn.Parameter(torch.ones(C, device=dev))
        params[f"wgu_{l}"] = lin(2 * FF, C)
        params[f"wdown_{l}"] = lin(C, FF)
    opt = torch.optim.AdamW(params.values(), lr=3e-4, betas=(0.9, 0.95), eps=1e-8,
                            weight_decay=0.1)
    inv = 1.0 / (10000.0 ** (torch.arange(0, HS, 2, device=dev, dtype=torch.float64) / HS))
    ang = torch.arange(T, device=dev, dtype=torch.float64)[:, None] * inv[None, :]
    cos, sin = ang.cos().float(), ang.sin().float()  # (T, HS/2)
    n = B * T
    tokens = (torch.arange(n, device=dev) * 7919 % V).view(B, T)
    targets = ((torch.arange(n, device=dev) * 104729 + 13) % V).view(-1)

    def rms(x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * w

    def rope(x):  # x (B, H, T, HS), rotate_half convention
        x1, x2 = x[..., : HS // 2], x[..., HS // 2:]
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)

    def forward():
        x = params["wte"][tokens]
        for l in range(L):
            h = rms(x, params[f"ln1_{l}"])
            qkv = h @ params[f"wqkv_{l}"].t()
            q, k, v = qkv.split([NH * HS, NKV * HS, NKV * HS], dim=-1)
            q = rope(q.view(B, T, NH, HS).transpose(1, 2))
            k = rope(k.view(B, T, NKV, HS).transpose(1, 2))
            v = v.view(B, T, NKV, HS).transpose(1, 2)
            k = k.repeat_interleave(NH // NKV, dim=1)
            v = v.repeat_interleave(NH // NKV, dim=1)
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + o.transpose(1, 2).reshape(B, T, C) @ params[f"wo_{l}"].t()
            h = rms(x, params[f"ln2_{l}"])
            gu = h @ params[f"wgu_{l}"].t()
            g, u = gu.split([FF, FF], dim=-1)
            x = x + (F.silu(g) * u) @ params[f"wdown_{l}"].t()
        logits = rms(x, params["lnf"]) @ params["lm"].t()
        return F.cross_entropy(logits.view(-1, V), targets)

    def timed(fn):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        out = fn()
        e.record()
        e.synchronize()
        return s.elapsed_time(e), out

    loss = forward()
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=False)
    torch.cuda.synchronize()
    loss0 = loss.item()
    fwd, bwd, op, tot = [], [], [], []
    for _ in range(a.steps):
        f, loss = timed(forward)
        b, _ = timed(loss.backward)
        o, _ = timed(lambda: (opt.step(), opt.zero_grad(set_to_none=False)))
        fwd.append(f)
        bwd.append(b)
        op.append(o)
        tot.append(f + b + o)
    med = lambda v: sorted(v)[len(v) // 2]  # noqa: E731
    step_ms = med(tot)
    matmul_params = L * (C * QKV + C * C + 2 * FF * C + FF * C) + V * C
    flops = 6.0 * n * matmul_params + 3.0 * 2.0 * B * NH * T * T * HS * L
    n_params = sum(p.numel() for p in params.values())
    result = {"tool": "torch-peer", "torch": torch.__version__,
              "device": torch.cuda.get_device_name(0), "dtype": "fp32", "params": n_params,
              "step_ms": round(step_ms, 3), "forward_ms": round(med(fwd), 3),
              "backward_ms": round(med(bwd), 3), "adamw_ms": round(med(op), 3),
              "tokens_per_s": round(n / (step_ms / 1e3), 1),
              "model_tflops": round(flops / (step_ms / 1e3) / 1e12, 2),
              "loss_first": round(loss0, 4), "loss_last": round(loss.item(), 4)}
    del params, opt
    torch.cuda.empty_cache()

    # int8 block quantization in torch ops (absmax / 127 per 2048-element block, round half to
    # even) next to a copy of the same fp32 buffer.
    ne = a.quant_elems - a.quant_elems % 2048
    x = torch.randn(ne, device=dev) * 2
    y = torch.empty_like(x)

    def quant():
        xb = x.view(-1, 2048)
        s = xb.abs().amax(dim=1, keepdim=True) / 127
        s = torch.where(s > 0, s, torch.ones_like(s))
        return torch.round(xb / s).clamp_(-127, 127).to(torch.int8), s

    def best(fn, reps=10):
        fn()
        return med([timed(fn)[0] for _ in range(reps)])

    copy_ms = best(lambda: y.copy_(x))
    q_ms = best(quant)
    result["quant"] = {"elements": ne, "block": 2048, "d2d_copy_ms": round(copy_ms, 4),
                       "torch_quantize_int8_ms": round(q_ms, 4),
                       "torch_quantize_int8_vs_copy": round(copy_ms / q_ms, 3)}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
