#!/usr/bin/env bash
# Smoke-run every fuzz target for a fixed time (see README.md).
#
#   fuzz/run-smoke.sh [SECONDS] [TARGET...]     (default: 30 s, all three targets)
#
# Seeds fuzz/corpus/<target>/ (git-ignored) with spec/testdata/*.arena and one CPython-profile
# archive per layout (written by the gen-seeds bin), runs `cargo fuzz run` with
# RUSTC_BOOTSTRAP=1 (only a stable toolchain is needed), prints the executions per target and
# exits 1 if any target found a crash (the input is left in fuzz/artifacts/<target>/).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
secs="${1:-30}"
shift || true
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=(open_bytes load_bytes pyformat_check)
export RUSTC_BOOTSTRAP=1
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
command -v cargo-fuzz > /dev/null || { echo "cargo-fuzz missing: cargo install cargo-fuzz" >&2; exit 2; }

cd "$repo"
seeds="$here/corpus/_seeds"
mkdir -p "$seeds"
cp spec/testdata/*.arena "$seeds/"
cargo run -q --manifest-path fuzz/Cargo.toml --bin gen-seeds -- "$seeds" > /dev/null

failed=()
summary=()
for t in "${targets[@]}"; do
    mkdir -p "$here/corpus/$t" "$here/artifacts/$t"
    cp -n "$seeds"/*.arena "$here/corpus/$t/" 2> /dev/null || true
    log="$here/artifacts/$t/smoke.log"
    echo "== $t: building and fuzzing for ${secs}s (log: ${log#"$repo"/})"
    set +e
    cargo fuzz run --fuzz-dir "$here" "$t" "$here/corpus/$t" -- \
        -max_total_time="$secs" -dict="$here/arena.dict" -max_len=65536 \
        -print_final_stats=1 -artifact_prefix="$here/artifacts/$t/" > "$log" 2>&1
    rc=$?
    set -e
    runs=$(grep -Eo '^stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' || true)
    [ -n "$runs" ] || runs=$(grep -Eo 'Done [0-9]+ runs' "$log" | grep -Eo '[0-9]+' || echo '?')
    cov=$(grep -Eo 'DONE[[:space:]]+cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' "$log" | tail -1 | sed 's/DONE[[:space:]]*//' || true)
    if [ "$rc" -ne 0 ]; then
        failed+=("$t")
        summary+=("$t: CRASH after $runs executions (exit $rc) -- see $log and $here/artifacts/$t/")
        grep -E "panicked at|ERROR: |SUMMARY" "$log" | head -5 || true
    else
        summary+=("$t: $runs executions in ${secs}s, no crash ($cov)")
    fi
done

echo
printf '%s\n' "${summary[@]}"
[ "${#failed[@]}" -eq 0 ]
