#!/usr/bin/env bash
# Build the pycds wheel for each CPython version and install it into a fresh virtual
# environment per version: .venv/<X.Y>/ (with pytest). Interpreters come from pyenv.
# Usage: scripts/setup.sh [3.11 3.12 3.13]
set -euo pipefail
cd "$(dirname "$0")/.."
versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=(3.11 3.12 3.13)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
mkdir -p dist .venv
for v in "${versions[@]}"; do
  py="$(scripts/python-for.sh "$v")"
  venv=".venv/$v"
  if [ ! -x "$venv/bin/python" ]; then
    "$py" -m venv "$venv"
  fi
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -U pip >/dev/null 2>&1 || true
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "maturin>=1.7,<2" "pytest>=8"
  tag="cp${v/./}"
  rm -f dist/pycds-*-"$tag"-*.whl
  "$venv/bin/maturin" build --release --quiet -i "$venv/bin/python" -o dist >/dev/null
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps dist/pycds-*-"$tag"-*.whl
  "$venv/bin/python" -c "import pycds; print('pycds', pycds.__version__, 'ready for', pycds.check_interpreter()['python'])"
done
