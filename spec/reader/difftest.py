#!/usr/bin/env python3
"""Differential test: the spec reader (arena_reader.py) against the reference reader.

Mutates archives at random (1-4 random bytes or u32/u64 fields in the header, the tables,
the heap; sometimes a span's bitmap_off), then -- for most mutants -- recomputes every
checksum so that the structural checks, not the CRCs, decide (and sometimes breaks the
BITMAPS section CRC alone again, which only the full check's ARENA-SEC-008 rejects). Every mutant is judged by both readers; they must agree on
accept/reject. The reference verdicts come from ``write-sample-archives --verify`` (one
process for all files).

    python3 difftest.py --rust PATH/write-sample-archives [--n 2000] [--seed 1] FILE...

Exit 0 when both readers agree on every mutant, 1 otherwise (mismatches are listed, and the
mutants are kept in the work directory).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import arena_reader as ar  # noqa: E402
from test_rules import fix, section  # noqa: E402


def mutate(rng: random.Random, data: bytes) -> bytearray:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        r = rng.random()
        if r < 0.5:
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        elif r < 0.8:
            # a field-sized write of an interesting value at an aligned offset
            size = rng.choice((4, 8))
            i = rng.randrange(0, max(1, len(b) - size), 4)
            v = rng.choice((0, 1, 7, 8, 0x80, 0xFF, 0x7FFFFFFF, 0xFFFFFFFF, (1 << 64) - 1, (1 << 63), rng.getrandbits(8 * size)))
            b[i : i + size] = (v & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
        elif r < 0.9:
            i = rng.randrange(len(b))
            b[i] = rng.getrandbits(8)
        else:
            # truncate or extend by a multiple of 8 (keeps the CRC repair meaningful)
            if rng.random() < 0.5 and len(b) > 136:
                del b[-8 * rng.randint(1, 2) :]
            else:
                b += bytes(8)
    return b


def mutate_bitmap_off(rng: random.Random, b: bytearray) -> None:
    """Point a span's bitmaps elsewhere inside BITMAPS (ARENA-TAB-010 territory)."""
    _, so, sl = section(b, 3)
    _, _, bl = section(b, 6)
    if sl < 56 or bl < 8:
        return
    e = so + 56 * rng.randrange(sl // 56)
    struct.pack_into("<Q", b, e + 16, 8 * rng.randrange(bl // 8 + 1))


def break_bitmaps_crc(b: bytearray) -> None:
    """A wrong BITMAPS section CRC, with the section table and header CRCs repaired: only the
    full check (ARENA-SEC-008) can reject it."""
    e, _, _ = section(b, 6)
    struct.pack_into("<I", b, e + 4, struct.unpack_from("<I", b, e + 4)[0] ^ (1 << 7))
    fix(b, spans=False, sections=False)


def py_verdict(data: bytes):
    try:
        a = ar.Arena(data)
        a.verify_all()
        return None
    except ar.ArenaError as e:
        return e.req


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--rust", required=True, help="path of the write-sample-archives binary")
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("files", nargs="+")
    args = p.parse_args()
    rng = random.Random(args.seed)
    sources = [open(f, "rb").read() for f in args.files]
    work = tempfile.mkdtemp(prefix="arena-difftest-")
    names, verdicts = [], []
    for i in range(args.n):
        b = mutate(rng, rng.choice(sources))
        if rng.random() < 0.1:
            try:
                mutate_bitmap_off(rng, b)
            except Exception:  # noqa: BLE001 -- the mutated tables may be garbage
                pass
        if rng.random() < 0.85 and len(b) >= 128:
            try:
                fix(b)
                if rng.random() < 0.05:
                    break_bitmaps_crc(b)
            except Exception:  # noqa: BLE001 -- repair is best-effort on garbage
                pass
        name = os.path.join(work, f"m{i:05}.arena")
        with open(name, "wb") as f:
            f.write(b)
        names.append(name)
        verdicts.append(py_verdict(bytes(b)))
    out = subprocess.run([args.rust, "--verify", *names], check=True, capture_output=True, text=True).stdout
    rust = {}
    for line in out.splitlines():
        status, name, rest = (line.split(" ", 2) + [""])[:3]
        rust[name] = (status, rest)
    mismatches = 0
    accepted = sum(v is None for v in verdicts)
    by_id: dict = {}
    for name, v in zip(names, verdicts):
        by_id[v or "accept"] = by_id.get(v or "accept", 0) + 1
        status, msg = rust[name]
        if (status == "OK") != (v is None):
            mismatches += 1
            print(f"MISMATCH {name}: spec reader {v or 'accepts'}, reference reader {status} {msg}")
    print(f"difftest: {args.n} mutants, {accepted} accepted by both readers, {mismatches} disagreements")
    print("  first failing check (spec reader): " + ", ".join(f"{k} {n}" for k, n in sorted(by_id.items())))
    if mismatches == 0 and not args.keep:
        shutil.rmtree(work)
    else:
        print(f"  mutants kept in {work}")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
