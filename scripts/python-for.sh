#!/usr/bin/env bash
# Print the path of the pyenv-managed CPython X.Y (installing it with pyenv if missing).
set -euo pipefail
v="$1"
root="$(pyenv root)"
latest="$(pyenv latest "$v" 2>/dev/null || true)"
if [ -z "$latest" ] || [ ! -x "$root/versions/$latest/bin/python3" ]; then
  echo "CPython $v is not installed; installing it with pyenv" >&2
  pyenv install -s "$v" >&2
  latest="$(pyenv latest "$v")"
fi
echo "$root/versions/$latest/bin/python3"
