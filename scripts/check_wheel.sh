#!/usr/bin/env bash
# The package as a user gets it: build the sdist and the wheel, check them with twine,
# install the wheel into a fresh virtual environment outside the repository and run
# the quick demo there (the bundled data must come from inside the wheel).
#
# Usage: scripts/check_wheel.sh [PYTHON]   (PYTHON builds; default: .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${1:-.venv/bin/python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$PYTHON" -m pip install --quiet build twine
"$PYTHON" -m build --outdir "$work/dist" . > "$work/build.log" 2>&1 || { tail -20 "$work/build.log"; exit 1; }
"$PYTHON" -m twine check --strict "$work"/dist/*

python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet --upgrade pip
# a CPU build of torch first, so the wheel's torch>=2.2 range installs nothing more
"$work/venv/bin/python" -m pip install --quiet torch==2.13.0
"$work/venv/bin/python" -m pip install --quiet "$work"/dist/epitensor-*.whl

cd "$work"  # outside the repository: nothing of the source tree is importable here
EPITENSOR_CACHE="$work/cache" "$work/venv/bin/epitensor" demo --quick --out "$work/demo" --quiet
test -s "$work/demo/report.html"
"$work/venv/bin/python" -c "import epitensor, pathlib; p = pathlib.Path(epitensor.__file__); assert 'site-packages' in str(p), p"
echo "wheel: built, twine check passed, installed outside the repository, quick demo wrote report.html"
