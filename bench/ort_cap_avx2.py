#!/usr/bin/env python3
"""Cap a copy of ONNX Runtime's CPU library at AVX2 for a same-machine comparison.

ONNX Runtime picks its kernels from CPUID and XCR0 at load time and has no switch to stay
below AVX-512 (MLAS, its CPU kernels, checks `XCR0 & 0xE0` for the AVX-512 register state
and `XCR0 & 0x60000` for AMX). To measure it on AVX2 beside `XF_CPU=avx2` on a machine that
has AVX-512, this script patches the XGETBV reads in a *copy* of libonnxruntime.so so that
the library sees XCR0 = 7 (x87, SSE and AVX state only): every AVX-512 and AMX check then
fails and MLAS takes its AVX2/FMA3 kernels, as on a Zen 3. CPUID is left alone, so the
library still knows the CPU has FMA and AVX2.

Usage: bench/ort_cap_avx2.py LIB   (patches LIB in place; run it on a copy)

Two code shapes are recognised (ONNX Runtime 1.30's onnxruntime-node x64 build):
  A. xgetbv; mov eax,eax; shl rdx,32; or rdx,rax      (MLAS's platform setup, cpuinfo)
     -> the 9 bytes after xgetbv become: and eax,7; mov rdx,rax; 3-byte nop
  B. xgetbv; mov edx,edi                               (onnxruntime's CPUIDInfo, which reads
     only EAX and overwrites EDX next) -> xgetbv becomes: mov al,7; nop
     (EAX's upper bytes keep CPUID leaf 1's signature; CPUIDInfo tests only the low byte:
     `and r14d,0xe6; cmp r14d,0xe6` for AVX-512)
The script exits 1 without writing unless it finds sites of both shapes, so a different
build is not silently left uncapped. Prints one line per patched site (file offsets).
"""
import sys

XGETBV = bytes.fromhex("0f01d0")
MERGE = bytes.fromhex("89c0" "48c1e220" "4809c2")          # shape A after xgetbv
MERGE_CAP = bytes.fromhex("83e007" "4889c2" "0f1f00")      # and eax,7; mov rdx,rax; nop
AFTER_B = bytes.fromhex("89fa")                            # shape B: mov edx,edi
XGETBV_B = bytes.fromhex("b00790")                         # mov al,7; nop


def main():
    if len(sys.argv) != 2:
        sys.stderr.write("usage: ort_cap_avx2.py LIB (patched in place: use a copy)\n")
        return 2
    path = sys.argv[1]
    with open(path, "rb") as f:
        data = bytearray(f.read())
    sites = []
    i = data.find(XGETBV)
    while i >= 0:
        tail = bytes(data[i + 3:i + 3 + len(MERGE)])
        if tail == MERGE:
            sites.append((i, "A"))
        elif tail.startswith(AFTER_B):
            sites.append((i, "B"))
        i = data.find(XGETBV, i + 1)
    # The three bytes also occur inside other instructions and data; those are skipped (a
    # 12-byte shape A or 5-byte shape B match there is not expected). `objdump -d LIB | grep
    # xgetbv` lists the real sites to compare with the offsets printed below.
    kinds = {k for _, k in sites}
    if kinds != {"A", "B"}:
        sys.stderr.write(f"{path}: expected XGETBV sites of shapes A and B, found {sorted(kinds)} "
                         "(already patched, or another build)\n")
        return 1
    for off, kind in sites:
        if kind == "A":
            data[off + 3:off + 3 + len(MERGE_CAP)] = MERGE_CAP
        else:
            data[off:off + 3] = XGETBV_B
        print(f"patched xgetbv at 0x{off:x} shape {kind}")
    with open(path, "wb") as f:
        f.write(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
