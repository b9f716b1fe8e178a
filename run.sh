#!/usr/bin/env bash
# The two ways in, on a fresh machine with Python 3.11+, Java 17 and Maven:
#   ./run.sh demo    run the demo pipeline (starts and stops a local Kafka itself)
#   ./run.sh test    run the test suite against a real local Kafka
# Both create .venv and install xcombus into it on first use.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
VENV=${XCOMBUS_VENV:-.venv}

need() {
  command -v "$1" >/dev/null 2>&1 || { echo "run.sh: $1 is required: $2" >&2; exit 2; }
}

ensure_env() {
  need "$PYTHON" "install Python 3.11 or newer (or set PYTHON=/path/to/python3.11)"
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || { echo "run.sh: $("$PYTHON" -V) is too old: Python 3.11+ is required" >&2; exit 2; }
  if [ -z "${XCOMBUS_BOOTSTRAP_SERVERS:-}" ]; then
    need java "install Java 17+ (e.g. apt-get install openjdk-17-jre-headless), or set XCOMBUS_BOOTSTRAP_SERVERS"
    need mvn "install Maven (e.g. apt-get install maven), or set XCOMBUS_BOOTSTRAP_SERVERS"
  fi
  if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
  fi
  # Reinstall only when the dependencies changed.
  if [ ! -f "$VENV/.installed" ] || [ pyproject.toml -nt "$VENV/.installed" ]; then
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -e '.[test]'
    touch "$VENV/.installed"
  fi
}

case "${1:-}" in
  demo)
    ensure_env
    exec "$VENV/bin/xcombus" demo "${@:2}"
    ;;
  test)
    ensure_env
    set +e
    "$VENV/bin/python" -m pytest "${@:2}"
    rc=$?
    # pytest exits 5 when it collected no test: that is a failure, not a pass.
    if [ "$rc" -eq 5 ]; then
      echo "run.sh: pytest ran no tests" >&2
      exit 1
    fi
    exit "$rc"
    ;;
  *)
    echo "usage: ./run.sh demo | ./run.sh test [pytest args]" >&2
    exit 2
    ;;
esac
