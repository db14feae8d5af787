#!/usr/bin/env bash
# Security checks of the supply chain and of the source:
#   1. pip-audit on the locked dependency set (requirements/runtime.lock, requirements/dev.lock),
#      accepting only the vulnerabilities listed with a reason in requirements/audit-ignore.txt;
#   2. bandit on src/ at medium and high severity (-ll); accepted findings carry `# nosec BXXX`.
# Usage: bash scripts/audit.sh
#
# Needs network access to PyPI only: pip-audit's default vulnerability service is PyPI's JSON API
# (no OSV access). Writes to .venv (pip-audit and bandit are installed there when missing) and to a
# temporary directory it removes; pip-audit's HTTP cache goes there, not to ~/.cache.
#
# When PyPI is reached through an index that serves the project JSON (/pypi/<name>/json) but not the
# per-release JSON (/pypi/<name>/<version>/json) that pip-audit asks for, pip-audit cannot audit
# anything. The script then reads the same PyPI vulnerability data from the project JSON, which
# describes the latest release only: pins at the latest release are audited, older pins are listed
# as not audited.
#
# Exit status: 0 clean; 1 a vulnerability or a bandit finding (or pip-audit failed); 2 no finding,
# but some pins could not be audited.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
py=.venv/bin/python
if ! "$py" -m pip_audit --version >/dev/null 2>&1; then
  "$py" -m pip install --quiet 'pip-audit>=2.10,<3' 2>&1 | grep -v '^WARNING: Location' || true
fi
if ! "$py" -m bandit --version >/dev/null 2>&1; then
  "$py" -m pip install --quiet 'bandit>=1.9,<2' 2>&1 | grep -v '^WARNING: Location' || true
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

locks=(requirements/runtime.lock requirements/dev.lock)
ignore_file=requirements/audit-ignore.txt

# requirements/audit-ignore.txt: "<id> <package> <reason...>" per line; every entry needs a reason.
ignore=()
while read -r id package reason; do
  case "$id" in "" | "#"*) continue ;; esac
  if [ -z "$reason" ]; then
    echo "audit: $ignore_file: entry $id ($package) has no reason" >&2
    exit 1
  fi
  ignore+=(--ignore-vuln "$id")
done <"$ignore_file"

# The PyPI vulnerability data, read from the project JSON. Used only when the per-release JSON is
# not served (see above).
cat >"$tmp/pypi_latest_audit.py" <<'PY'
"""Audit pinned requirements against the vulnerabilities PyPI lists for each project's latest release."""

from __future__ import annotations

import concurrent.futures
import json
import re
import ssl
import sys
import urllib.error
import urllib.request

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")
CONTEXT = ssl.create_default_context()


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30, context=CONTEXT) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""


def pins(paths: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for path in paths:
        with open(path, encoding="utf-8") as lines:
            for line in lines:
                match = PIN.match(line)
                if match:
                    found[canonical(match[1])] = match[2]
    return found


def probe(lock: str) -> int:
    """0: per-release JSON served (run pip-audit); 3: only the project JSON is served."""
    name, version = next(iter(pins([lock]).items()))
    try:
        release, _ = get(f"https://pypi.org/pypi/{name}/{version}/json")
        project, _ = get(f"https://pypi.org/pypi/{name}/json")
    except OSError:
        return 0  # let pip-audit report the network problem
    return 3 if release == 404 and project == 200 else 0


def audit(ignored: set[str], paths: list[str]) -> int:
    pinned = pins(paths)

    def fetch(name: str) -> tuple[str, str | None, list[dict[str, object]], str]:
        try:
            status, body = get(f"https://pypi.org/pypi/{name}/json")
        except OSError as exc:
            return name, None, [], f"{type(exc).__name__}: {exc}"
        if status != 200:
            return name, None, [], f"HTTP {status}"
        data = json.loads(body)
        return name, data["info"]["version"], data.get("vulnerabilities") or [], ""

    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        results = sorted(pool.map(fetch, pinned))
    findings, skipped, unaudited = [], [], []
    for name, latest, vulns, error in results:
        version = pinned[name]
        if error:
            unaudited.append(f"{name}=={version}: {error}")
            continue
        if latest != version:
            unaudited.append(f"{name}=={version}: PyPI's data covers the latest release, {latest}, only")
            continue
        seen: set[str] = set()  # PyPI lists one vulnerability under each of its ids (PYSEC, GHSA)
        for vuln in vulns:
            ids = {str(vuln["id"]), *map(str, vuln.get("aliases") or [])}
            if vuln.get("withdrawn") or ids & seen:
                continue
            seen |= ids
            fixed = ", ".join(map(str, vuln.get("fixed_in") or [])) or "none"
            aliases = ", ".join(sorted(ids - {str(vuln["id"])})) or "-"
            line = f"{name}=={version} {vuln['id']} (aliases: {aliases}; fixed in: {fixed})"
            (skipped if ids & ignored else findings).append(line)
    audited = len(pinned) - len(unaudited)
    print(f"Audited {audited} of {len(pinned)} pinned packages against PyPI's vulnerability data.")
    for line in findings:
        print(f"VULNERABLE {line}")
    for line in skipped:
        print(f"ignored (requirements/audit-ignore.txt) {line}")
    for line in unaudited:
        print(f"NOT AUDITED {line}")
    if findings:
        return 1
    print("No known vulnerabilities found in the audited pins.")
    return 2 if unaudited else 0


if __name__ == "__main__":
    if sys.argv[1] == "probe":
        sys.exit(probe(sys.argv[2]))
    ignored = set(sys.argv[2].split()) if len(sys.argv) > 2 else set()
    sys.exit(audit(ignored, sys.argv[3:]))
PY

audit_status=0
echo "== pip-audit: ${locks[*]}"
probe=0
"$py" "$tmp/pypi_latest_audit.py" probe "${locks[0]}" || probe=$?
if [ "$probe" -ne 3 ]; then
  "$py" -m pip_audit --strict --disable-pip --require-hashes --vulnerability-service pypi \
    --cache-dir "$tmp/pip-audit-cache" --progress-spinner off --desc on \
    ${ignore[@]+"${ignore[@]}"} -r "${locks[0]}" -r "${locks[1]}" || audit_status=1
else
  echo "PyPI serves no per-release JSON here, so pip-audit cannot query it;" \
    "reading the project JSON instead (latest releases only)."
  ids=""
  for ((i = 1; i < ${#ignore[@]}; i += 2)); do ids+="${ignore[i]} "; done
  "$py" "$tmp/pypi_latest_audit.py" audit "$ids" "${locks[@]}" || audit_status=$?
fi

bandit_status=0
echo "== bandit -r src -q -ll"
# bandit warns "nosec encountered ..., but no failed test" for every other node of a line that
# carries a `# nosec BXXX`; those warnings say nothing about the code and are dropped.
"$py" -m bandit -r src -q -ll 2>"$tmp/bandit.err" || bandit_status=1
grep -v 'nosec encountered' "$tmp/bandit.err" >&2 || true
[ "$bandit_status" -eq 0 ] && echo "bandit: no medium or high severity issue in src/"

if [ "$audit_status" -eq 1 ] || [ "$bandit_status" -ne 0 ]; then
  exit 1
fi
exit "$audit_status"
