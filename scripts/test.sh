#!/usr/bin/env bash
# The whole test suite: Rust lints and tests, the independent spec reader, the Python
# tests on CPython 3.11, 3.12 and 3.13 (wheels built and installed by setup.sh), and the
# fast parts of the compatibility checks (compat/: CPython's own tests and three packages'
# test suites served from the archive, hostile archives, staleness, concurrency).
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

# The compatibility checks (compat/README.md has the full runs and their results). Each
# driver is stdlib-only; the interpreter under test is the venv's.
py312="$PWD/.venv/3.12/bin/python"
echo "== compat: CPython regression tests, quick selection, plain vs SHARE (3.11, 3.12, 3.13)"
for v in "${versions[@]}"; do
  "$py312" compat/regrtest.py --python "$PWD/.venv/$v/bin/python" --quick -q
done
echo "== compat: third-party test suites (packaging, attrs, jinja2) plain vs SHARE (3.12)"
tp=".venv/tp-3.12"
[ -x "$tp/bin/python" ] || "$(scripts/python-for.sh 3.12)" -m venv "$tp"
"$tp/bin/python" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps dist/pycds-*-cp312-*.whl
"$py312" compat/thirdparty.py --python "$PWD/$tp/bin/python"
echo "== compat: hostile archives (quick), staleness, concurrency (3.12)"
"$py312" compat/hostile.py --python "$py312" --quick
"$py312" compat/staleness.py --python "$py312"
"$py312" compat/concurrency.py --python "$py312" --seconds 20 --repeat 5
