#!/usr/bin/env bash
# Tests of the independent spec reader (arena_reader.py) -- see README.md in this directory.
#
#   spec/reader/test.sh            (from anywhere; honours CARGO_TARGET_DIR / CARGO_BUILD_JOBS)
#
# 1. every gold file in spec/testdata is accepted;
# 2. rule-by-rule cases: each requirement id is reported when its check is the first to fail;
# 3. archives written by the Rust writer (random graphs) are accepted, with the same roots;
# 4. every single-bit flip of every gold file is rejected, and the CLI reports an id for a
#    flipped copy (exit 1, id on stderr);
# 5. differential: the Rust reader judges the rule cases and 2000 random mutants the same way
#    (accept vs. reject) as the spec reader.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
reader="$here/arena_reader.py"
py="${PYTHON:-python3}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

step() { printf '\n== %s\n' "$*"; }
die() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

step "1. gold files"
shopt -s nullglob
gold=("$repo"/spec/testdata/*.arena)
[ "${#gold[@]}" -gt 0 ] || die "no gold files in spec/testdata"
for f in "${gold[@]}"; do
    "$py" "$reader" -q "$f" || die "gold file rejected: $f"
    echo "ok   $(basename "$f"): $("$py" "$reader" --roots "$f" | wc -l) root(s)"
done

step "2. rule-by-rule cases"
"$py" "$here/test_rules.py" --emit "$work/rules" "$repo/spec/testdata" > "$work/rules.log" \
    || { cat "$work/rules.log"; die "rule tests"; }
grep -c '^ok' "$work/rules.log" | sed 's/$/ rule cases passed/'

step "3. archives written by the Rust writer"
(cd "$repo" && cargo build -q -p pycds-benches --bin write-sample-archives)
target_dir="$(cd "$repo" && cargo metadata --format-version 1 --no-deps | "$py" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
writer="$target_dir/debug/write-sample-archives"
[ -x "$writer" ] || die "writer binary not found at $writer"
"$writer" "$work/samples" | sed 's/^/     /'
samples=("$work"/samples/*.arena)
for f in "${samples[@]}"; do
    "$py" "$reader" --roots "$f" > "$work/roots.txt" || die "Rust-written archive rejected: $f"
    diff -u "${f%.arena}.roots" "$work/roots.txt" || die "root names differ for $f"
    echo "ok   $(basename "$f"): accepted, $(wc -l < "$work/roots.txt") root name(s) identical"
done

step "4. bit flips"
PYTHONPATH="$here" "$py" - "${gold[@]}" <<'EOF'
import sys
import arena_reader as ar
for path in sys.argv[1:]:
    data = open(path, "rb").read()
    ids = {}
    for i in range(len(data)):
        for bit in range(8):
            b = bytearray(data)
            b[i] ^= 1 << bit
            try:
                ar.Arena(bytes(b)).verify_all()
            except ar.ArenaError as e:
                ids[e.req] = ids.get(e.req, 0) + 1
                continue
            sys.exit(f"FAIL: flipping bit {bit} of byte {i:#x} of {path} was not detected")
    print(f"ok   {path.rsplit('/', 1)[-1]}: all {8 * len(data)} single-bit flips rejected ("
          + ", ".join(f"{k} {v}" for k, v in sorted(ids.items())) + ")")
EOF
for f in "${gold[@]}" "${samples[@]}"; do
    size=$(stat -c %s "$f")
    for pos in 40 $((size / 2)) $((size - 20)); do
        "$py" -c 'import sys; b = bytearray(open(sys.argv[1], "rb").read()); b[int(sys.argv[2])] ^= 4; open(sys.argv[3], "wb").write(b)' \
            "$f" "$pos" "$work/flipped.arena"
        if "$py" "$reader" -q "$work/flipped.arena" 2> "$work/err.txt"; then
            die "flipped copy of $f (byte $pos) accepted"
        else
            rc=$?
            [ "$rc" -eq 1 ] || die "reader exited $rc (expected 1) on flipped $f"
        fi
        grep -Eq '^ARENA-[A-Z]+-[0-9]{3}: ' "$work/err.txt" || die "no requirement id on stderr: $(cat "$work/err.txt")"
    done
    echo "ok   $(basename "$f"): flipped copies rejected ($(cut -d: -f1 "$work/err.txt") at byte $pos)"
done

step "5. differential against the Rust reader"
"$writer" --verify "$work"/rules/*.arena > "$work/rust-rules.txt"
"$py" - "$work/rules/expected.tsv" "$work/rust-rules.txt" <<'EOF'
import sys
expected = dict(line.rstrip("\n").split("\t") for line in open(sys.argv[1]))
bad = 0
for line in open(sys.argv[2]):
    status, path, *rest = line.rstrip("\n").split(" ", 2)
    want = expected[path.rsplit("/", 1)[-1]]
    if (status == "OK") != (want == "accept"):
        bad += 1
        print(f"MISMATCH {path}: spec reader {want}, Rust reader {status} {' '.join(rest)}")
print(f"{'ok  ' if not bad else 'FAIL'} Rust reader agrees on {len(expected) - bad}/{len(expected)} rule cases")
sys.exit(1 if bad else 0)
EOF
"$py" "$here/difftest.py" --rust "$writer" --n "${DIFFTEST_N:-2000}" \
    "${gold[@]}" "$work"/samples/random-[1-5].arena "$work/rules/000-base-archive.arena"

printf '\nall spec reader tests passed\n'
