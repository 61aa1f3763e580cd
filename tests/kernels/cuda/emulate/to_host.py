"""Rewrites a kernels/cuda .cu file into host C++ for the CUDA emulation (emu.h):
`kernel<<<grid, block[, smem]>>>(args)` becomes `emu::Launch(emu::Cfg(grid, block[, smem]),
kernel, args)` and the dynamic shared-memory array becomes emu's buffer.
Usage: to_host.py IN.cu OUT.cc"""
import re
import sys

src = open(sys.argv[1]).read()
src = src.replace("extern __shared__ float smem[];", "float* smem = emu::g_smem.data();")
src = re.sub(r"(\b[A-Za-z_]\w*(?:<[^<>;()]*>)?)<<<(.*?)>>>\(",
             lambda m: f"emu::Launch(emu::Cfg({m.group(2)}), {m.group(1)}, ", src, flags=re.S)
if "<<<" in src:
    sys.exit(f"{sys.argv[1]}: a launch to_host.py did not rewrite")
open(sys.argv[2], "w").write(src)
