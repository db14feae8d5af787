#!/usr/bin/env bash
# Fetch the official JSON-Schema-Test-Suite into .cache/json-schema-test-suite/ (idempotent, quiet).
#
# The suite ships inside the jsonschema sdist on PyPI (json/ is a vendored copy of
# github.com/json-schema-org/JSON-Schema-Test-Suite); pip downloads it through the ordinary
# registry client. tests/openapi/test_json_schema_suite.py runs draft4 and draft2020-12 from it.
# Usage: bash scripts/fetch_json_schema_suite.sh
set -euo pipefail
cd "$(dirname "$0")/.."

version=4.26.0
dest=.cache/json-schema-test-suite
stamp="$dest/.jsonschema-$version"
if [ -f "$stamp" ] && [ -d "$dest/tests/draft4" ] && [ -d "$dest/tests/draft2020-12" ] && [ -d "$dest/remotes" ]; then
  exit 0
fi

python=.venv/bin/python
[ -x "$python" ] || python=${PYTHON:-python3}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$python" -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
  "jsonschema==$version" -d "$work" 2>&1 | grep -v '^WARNING: Location' || true
archive="$work/jsonschema-$version.tar.gz"
if [ ! -f "$archive" ]; then
  echo "fetch_json_schema_suite: could not download jsonschema==$version from PyPI" >&2
  exit 1
fi
tar -xzf "$archive" -C "$work" "jsonschema-$version/json/tests" "jsonschema-$version/json/remotes" \
  "jsonschema-$version/json/LICENSE"

rm -rf "$dest"
mkdir -p "$dest"
cp -R "$work/jsonschema-$version/json/tests" "$work/jsonschema-$version/json/remotes" \
  "$work/jsonschema-$version/json/LICENSE" "$dest/"
touch "$stamp"
