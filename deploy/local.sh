#!/usr/bin/env bash
# The README's quick start: `bash deploy/local.sh up` runs spendwarden, `bash deploy/local.sh test`
# runs the whole test suite. Each creates (or reuses) .venv and installs the project from its
# own files first, so nothing needs to be done by hand on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${SPENDWARDEN_VENV:-.venv}

ensure_venv() {
  if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "spendwarden needs Python 3.11 or newer as \$PYTHON (found: $("$PYTHON" --version 2>&1))" >&2
    exit 2
  fi
  if [ ! -x "$VENV/bin/python" ]; then
    echo "creating $VENV" >&2
    "$PYTHON" -m venv "$VENV"
  fi
  # Reinstall only when the project's dependency list changed.
  stamp="$VENV/.spendwarden-installed"
  want=$(sha256sum pyproject.toml | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "installing spendwarden and its dependencies into $VENV (first run takes a minute)" >&2
    "$VENV/bin/python" -m pip install --quiet --upgrade pip >&2
    "$VENV/bin/python" -m pip install --quiet -e ".[test,embedded]" >&2
    echo "$want" > "$stamp"
  fi
}

cmd=${1:-}
shift || true
case "$cmd" in
  up)
    ensure_venv
    exec "$VENV/bin/spendwarden" up "$@"
    ;;
  test)
    ensure_venv
    set +e
    "$VENV/bin/python" -m pytest "$@"
    status=$?
    set -e
    if [ "$status" -eq 5 ]; then
      echo "pytest collected no tests: that is a failure here" >&2
      exit 1
    fi
    exit "$status"
    ;;
  *)
    echo "usage: bash deploy/local.sh up|test [args...]" >&2
    exit 2
    ;;
esac
