#!/usr/bin/env python3
"""Reads 'rps p50 p99' lines (wrk units: us/ms/s) and prints min/median/max of each column."""
import statistics
import sys

def to_ms(text: str) -> float:
    for unit, factor in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float(text)

rows = [line.split() for line in sys.stdin if line.strip()]
rps = [float(r[0]) for r in rows]
p50 = [to_ms(r[1]) for r in rows]
p99 = [to_ms(r[2]) for r in rows]
fmt = lambda xs, unit: f"{min(xs):.{2 if unit == 'ms' else 0}f}/{statistics.median(xs):.{2 if unit == 'ms' else 0}f}/{max(xs):.{2 if unit == 'ms' else 0}f}{unit}"
print(f"{sys.argv[1]:<22} {fmt(rps, ''):<28} {fmt(p50, 'ms'):<28} {fmt(p99, 'ms'):<28}")
