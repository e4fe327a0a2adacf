# Sourced by scripts/demo and scripts/test: create .venv and install the project
# (with EXTRAS) unless pyproject.toml is unchanged since the last install.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON_BIN="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON_BIN" -m venv .venv
fi
STAMP=".venv/.batchrun-installed-${EXTRAS:-base}"
WANT="$(cat pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ] || ! .venv/bin/python -c "import batchrun" 2>/dev/null; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
    if [ -n "${EXTRAS:-}" ]; then
        .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[${EXTRAS}]"
    else
        .venv/bin/python -m pip install --quiet --disable-pip-version-check -e .
    fi
    echo "$WANT" > "$STAMP"
fi
