#!/usr/bin/env bash
# The whole test suite: Rust lints and tests, the independent spec reader, and the
# Python tests on CPython 3.11, 3.12 and 3.13 (wheels built and installed by setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
versions=(3.11 3.12 3.13)
PYO3_PYTHON="$(scripts/python-for.sh 3.12)"
export PYO3_PYTHON
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

echo "== cargo fmt / clippy"
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings

echo "== cargo test (arena, pyformat)"
cargo test -p pycds-arena -p pycds-pyformat

echo "== wheels for ${versions[*]}"
scripts/setup.sh "${versions[@]}"

if [ -x spec/reader/test.sh ]; then
  echo "== independent spec reader"
  spec/reader/test.sh
fi

for v in "${versions[@]}"; do
  echo "== pytest on CPython $v"
  marker="not slow"
  [ "$v" = 3.12 ] && marker=""
  .venv/"$v"/bin/python -m pytest -q -p no:cacheprovider ${marker:+-m "$marker"} tests
done
