# Sourced by scripts/demo, scripts/test and scripts/check: create .venv and install the
# project into it as a WHEEL (built from this tree, installed non-editable, with EXTRAS),
# so what runs and what the suite tests is what `pip install .` ships: a data file left
# out of the wheel fails a test instead of a user's first `batchrun report --html`.
#
# Cheap when nothing changed: the wheel is built and installed again only when a file
# under batchrun/, pyproject.toml or README.md differs from the last install (a hash over
# their names and contents, in .venv/.batchrun-wheel); the dependencies are installed
# again only when pyproject.toml or EXTRAS changed (.venv/.batchrun-deps-EXTRAS).
#
# PYTHONSAFEPATH=1 is exported: `python -m ...` and `python -c ...` then leave the working
# directory off sys.path, so no command run from the repository root (the suite's
# subprocesses included) imports ./batchrun instead of the installed package.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PYTHONSAFEPATH=1
PYTHON_BIN="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON_BIN" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --quiet --disable-pip-version-check)
# what the wheel is built from (the build copies exactly these)
WHEEL_SOURCES=(pyproject.toml README.md batchrun)

tree_hash() {
    {
        cat pyproject.toml README.md
        find batchrun -type f ! -path '*/__pycache__/*' ! -name '*.py[co]' -print0 |
            LC_ALL=C sort -z | xargs -0 sha256sum
    } | sha256sum | cut -d' ' -f1
}

installed_from_wheel() {
    # found in site-packages, not in ./batchrun or through an editable install's finder
    .venv/bin/python -c 'import importlib.util as u, sys
spec = u.find_spec("batchrun")
sys.exit(spec is None or "site-packages" not in (spec.origin or ""))' 2>/dev/null
}

WHEEL_STAMP=".venv/.batchrun-wheel"
DEPS_STAMP=".venv/.batchrun-deps-${EXTRAS:-base}"
WANT_WHEEL="$(tree_hash)"
WANT_DEPS="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ "$(cat "$WHEEL_STAMP" 2>/dev/null)" != "$WANT_WHEEL" ] ||
    [ "$(cat "$DEPS_STAMP" 2>/dev/null)" != "$WANT_DEPS" ] || ! installed_from_wheel; then
    # Built from a clean copy of the sources: no build/ or *.egg-info left in the tree,
    # and no stale build/lib file (a module deleted here) can slip into the wheel.
    STAGE="$(mktemp -d)"
    trap 'rm -rf "$STAGE"' EXIT
    tar --exclude=__pycache__ --exclude='*.py[co]' -cf - "${WHEEL_SOURCES[@]}" | tar -xf - -C "$STAGE"
    NEW_DEPS=0
    if [ "$(cat "$DEPS_STAMP" 2>/dev/null)" != "$WANT_DEPS" ]; then
        NEW_DEPS=1
        "${PIP[@]}" install --upgrade pip
        # the build backend pyproject.toml asks for, into .venv: a rebuild then needs no
        # isolated build environment (and no index) each time a source file changes
        .venv/bin/python -c 'import tomllib
print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))' \
            > .venv/build-requirements.txt
        "${PIP[@]}" install --upgrade -r .venv/build-requirements.txt
    fi
    rm -rf .venv/wheelhouse
    "${PIP[@]}" wheel --no-deps --no-build-isolation --wheel-dir .venv/wheelhouse "$STAGE"
    WHEEL="$(ls "$ROOT"/.venv/wheelhouse/batchrun-*.whl)"
    if [ "$NEW_DEPS" = 1 ]; then
        "${PIP[@]}" install "batchrun${EXTRAS:+[$EXTRAS]} @ file://$WHEEL"
    fi
    # the same version number every time: only a forced reinstall puts this build in
    "${PIP[@]}" install --no-deps --force-reinstall "$WHEEL"
    rm -rf "$STAGE" batchrun.egg-info  # the latter: left by an editable install of old
    trap - EXIT
    echo "$WANT_DEPS" > "$DEPS_STAMP"
    echo "$WANT_WHEEL" > "$WHEEL_STAMP"
fi
