#!/usr/bin/env python3
"""Where memcpy is called from, per request: each call site with its calls, instructions and
copied size (bench/README.md, "Profiles"). Needs a callgrind file made with per-instruction
data: `CG_OPTS=--dump-instr=yes bench/profile/callgrind.sh LABEL h1`.

usage: bench/profile/memcpy_sites.py CALLGRIND_FILE [--requests N] [--so PATH] [--top N]

The size is the constant the call site loads into the length register (`mov $N,%edx` just
before the call, from `objdump -d`); blank when it is not a constant. Addresses are the
engine's (`--so`, default src/fastmesh/_engine.abi3.so of this checkout), as callgrind reports
them for a shared object.
"""

import argparse
import collections
import re
import subprocess
from pathlib import Path


def sites(path: Path) -> dict[tuple[str, int], list[int]]:
    """(calling function, call-site address) -> [calls, inclusive Ir] of memcpy."""
    names: dict[str, str] = {}
    fn = cfn = ""
    last = 0
    pending = False
    calls = 0
    out: dict[tuple[str, int], list[int]] = collections.defaultdict(lambda: [0, 0])

    def name(s: str) -> str:
        m = re.match(r"\((\d+)\)(?: (.*))?", s)
        if not m:
            return s
        if m.group(2) is not None:
            names[m.group(1)] = m.group(2)
        return names.get(m.group(1), "?")

    def position(tok: str) -> int:
        nonlocal last
        if tok[0] in "+-":
            last += int(tok, 0)
        elif tok != "*":
            last = int(tok, 0)
        return last

    for line in path.open():
        if line.startswith("fn="):
            fn = name(line[3:].strip())
        elif line.startswith("cfn="):
            cfn = name(line[4:].strip())
        elif line.startswith("calls="):
            calls, pending = int(line[6:].split()[0]), True
        elif line[:1].isdigit() or line[:1] in "+-*":
            toks = line.split()
            at = position(toks[0])
            if pending and "memcpy" in cfn:
                site = out[(fn, at)]
                site[0] += calls
                site[1] += int(toks[-1])
            pending = False
    return out


def size(so: Path, at: int) -> str:
    dump = subprocess.run(
        ["objdump", "-d", "--no-show-raw-insn", f"--start-address={at - 40}", f"--stop-address={at + 6}", str(so)],
        capture_output=True, text=True, check=False,
    ).stdout
    found = re.findall(r"mov\s+\$0x([0-9a-f]+),%edx", dump)
    return str(int(found[-1], 16)) if found else ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file", type=Path)
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--so", type=Path, default=Path(__file__).resolve().parents[2] / "src/fastmesh/_engine.abi3.so")
    ap.add_argument("--top", type=int, default=30)
    args = ap.parse_args()
    found = sites(args.file)
    n = args.requests
    total = sum(ir for _, ir in found.values())
    print(f"memcpy: {total / n:.0f} Ir/request in {sum(c for c, _ in found.values()) / n:.1f} calls/request")
    print(f"{'Ir/req':>7} {'calls':>5} {'bytes':>6}  site")
    for (fn, at), (c, ir) in sorted(found.items(), key=lambda kv: -kv[1][1])[: args.top]:
        print(f"{ir / n:7.1f} {c / n:5.2f} {size(args.so, at):>6}  {at:#x} {fn[:100]}")


if __name__ == "__main__":
    main()
