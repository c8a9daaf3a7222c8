#!/usr/bin/env bash
# The main job: build pycds for CPython 3.12 into .venv/3.12, install the third-party
# packages of the workloads, then trace, dump and share three real workloads (W1: a
# stdlib-heavy import set; W2: requests, rich, jinja2, pygments, docutils, packaging;
# W3: sympy) with `python -m pycds bench`, printing the start-up gain of each.
# Workloads come from ../shared/bench/workloads beside the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
v="${PYCDS_DEMO_PYTHON:-3.12}"
wl="${PYCDS_WORKLOADS:-$PWD/../shared/bench/workloads}"
[ -d "$wl" ] || { echo "workloads not found at $wl (set PYCDS_WORKLOADS)" >&2; exit 1; }
scripts/setup.sh "$v"
py=".venv/$v/bin/python"
"$py" -m pip install -q --disable-pip-version-check -r "$wl/requirements.txt"
code() { grep -v '^#' "$wl/$1.py" | tr '\n' ';' | sed 's/;*$//'; }
for w in ${PYCDS_DEMO_WORKLOADS:-W1 W2 W3}; do
  echo "== $w on CPython $v"
  "$py" -m pycds bench -n "${PYCDS_DEMO_PAIRS:-21}" -- -c "$(code "$w")"
done
