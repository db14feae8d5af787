#!/usr/bin/env bash
# Mutation testing (mutmut 3) of the token, DPoP, mTLS and scope modules. Not part of CI: it takes
# about an hour on a 2-core machine. See docs/reliability.md for what it covers.
#
# Usage: bash scripts/mutation.sh [GROUP...]        GROUP: tokens, mtls, scopes (default: all three)
#
# Environment:
#   MUTATION_JOBS     parallel mutmut workers (default 2)
#   MUTATION_WORKDIR  where the working copies live (default .mutation/ in the repository; ignored by git)
#   MUTATION_RESUME   1: keep an existing working copy and only run mutants without a result yet
#   MUTATION_RERUN    1: keep an existing working copy, copy the current tests/ into it and run the
#                     surviving mutants again (after adding tests; mutmut collects the new tests'
#                     coverage first). The source under test stays the copy's.
#   MUTMUT_VERSION    mutmut version installed into .venv when it is missing (default 3.8.1)
#   MUTATION_PYTEST_ARGS  extra test-selection arguments, e.g. "--deselect tests/x.py::test_y" for a test
#                     that fails on the current tree (mutmut needs every selected test to pass unmutated)
#
# mutmut reads its settings only from pyproject.toml ([tool.mutmut]) or setup.cfg ([mutmut]) in the
# directory it runs in. So that the repository's pyproject.toml stays as it is, each group runs in its
# own working copy (src/, tests/, pyproject.toml) under MUTATION_WORKDIR, whose pyproject.toml gets
# the group's [tool.mutmut] table appended. mutmut's own mutants/ directory is created inside that copy.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

jobs=${MUTATION_JOBS:-2}
workdir=${MUTATION_WORKDIR:-$root/.mutation}
version=${MUTMUT_VERSION:-3.8.1}

if [ ! -x .venv/bin/python ]; then
  echo "no .venv: run scripts/test.sh once first (it installs bankguard with its dev dependencies)" >&2
  exit 2
fi
if ! .venv/bin/python -c 'import mutmut' 2>/dev/null; then
  .venv/bin/python -m pip install --quiet "mutmut==$version" 2>&1 | grep -v '^WARNING: Location' || true
fi
.venv/bin/python -c 'import mutmut' # fail here if the install did not work

# Shared-state tests use the local Redis on 127.0.0.1:6379 (scripts/test.sh starts one when missing).
if ! (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null && command -v redis-server >/dev/null 2>&1; then
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
fi

# -- groups: the files mutated and the tests run against them ---------------------------------------
# mutmut records which tests call each function and runs only those against that function's mutants
# (stopping at the first failure). A surviving mutant runs every test that reaches its function, so
# the selection is what makes the run take one hour rather than four: the test files written for
# these modules, without the files that exercise other modules over real servers (JWKS, introspection,
# the uvicorn interop run), and without the property-based fuzz tests (-k below), which cost seconds
# each. Those stay in the normal test suite.

files_tokens=(
  src/bankguard/tokens/jwt.py
  src/bankguard/tokens/jose.py
  src/bankguard/tokens/jwk.py
  src/bankguard/tokens/dpop.py
  src/bankguard/tokens/dpop_nonce.py
  src/bankguard/controls/tokens.py
  src/bankguard/controls/auth.py
)
tests_tokens=(
  tests/tokens/test_jwt_verification.py
  tests/tokens/test_token_control.py
  tests/tokens/test_attacks.py
  tests/tokens/test_mutants_tokens.py
  tests/dpop/test_units.py
  tests/dpop/test_standards.py
  tests/dpop/test_attacks.py
  tests/dpop/test_audit.py
  tests/dpop/test_nonce_workers.py
  tests/dpop/test_mutants_dpop.py
  tests/mtls/test_control.py
)

files_mtls=(
  src/bankguard/mtls/sources.py
  src/bankguard/mtls/validation.py
  src/bankguard/mtls/eidas.py
  src/bankguard/controls/mtls.py
)
tests_mtls=(
  tests/mtls/test_sources.py
  tests/mtls/test_validation.py
  tests/mtls/test_eidas.py
  tests/mtls/test_control.py
  tests/mtls/test_mutants_mtls.py
)

files_scopes=(src/bankguard/scopes.py)
tests_scopes=(
  tests/test_scopes.py
  tests/test_mutants_scopes.py
  tests/openapi/test_enforcement.py
  tests/test_resolution.py
  tests/adapters
  tests/test_guard.py
)

# Property-based tests (hypothesis) by name: seconds each, so left to the normal suite.
select=(-k "not fuzz and not property and not arbitrary and not hostile and not random and not idempotent and not mutated and not never_fault")
# Tests that fork or spawn an interpreter, which imports the original, unmutated package.
deselect=(--deselect tests/tokens/test_jwks.py::test_restarts_thread_in_a_real_forked_child)

toml_list() { # "a" "b" -> ["a", "b"]
  local out="" item
  for item in "$@"; do out+="${out:+, }\"$item\""; done
  printf '[%s]' "$out"
}

prepare() { # GROUP: fresh working copy with the group's [tool.mutmut] table
  local group=$1 dir=$workdir/$1
  local -n files="files_$group" tests="tests_$group"
  if { [ "${MUTATION_RESUME:-0}" = 1 ] || [ "${MUTATION_RERUN:-0}" = 1 ]; } && [ -d "$dir/mutants" ]; then
    if [ "${MUTATION_RERUN:-0}" = 1 ]; then
      rm -rf "$dir/tests" && cp -r tests "$dir/" && rm -rf "$dir/tests/e2e"
      find "$dir/tests" -name __pycache__ -type d -prune -exec rm -rf {} +
    fi
    return
  fi
  rm -rf "$dir"
  mkdir -p "$dir"
  cp -r src tests pyproject.toml "$dir/"
  find "$dir" -name __pycache__ -type d -prune -exec rm -rf {} +
  rm -rf "$dir/tests/e2e"
  cat >>"$dir/pyproject.toml" <<EOF

[tool.mutmut]
source_paths = ["src"]
only_mutate = $(toml_list "${files[@]}")
pytest_add_cli_args_test_selection = $(toml_list "${tests[@]}" "${select[@]}" "${deselect[@]}" ${MUTATION_PYTEST_ARGS:-})
pytest_add_cli_args = ["-p", "no:cacheprovider", "--hypothesis-seed=0"]
EOF
}

summary() { # GROUP: killed / survived / timeout / no tests / total per file, from mutmut's meta files
  .venv/bin/python - "$workdir/$1" "$1" <<'EOF'
import json, pathlib, sys
base, group = pathlib.Path(sys.argv[1]), sys.argv[2]
from mutmut.stats import status_by_exit_code as status
cols = ["killed", "survived", "timeout", "no tests", "other", "not run"]
tot = dict.fromkeys(cols, 0)
print(f"\n== {group}")
print(f"{'file':44} " + " ".join(f"{c:>9}" for c in cols) + f" {'total':>6} {'score':>6}")
for meta in sorted((base / "mutants").rglob("*.py.meta")):
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    row = dict.fromkeys(cols, 0)
    for code in codes.values():
        s = "not run" if code is None else status[code]
        row[s if s in cols else "other"] += 1
    for c in cols:
        tot[c] += row[c]
    n = sum(row.values())
    tested = n - row["no tests"] - row["not run"]
    score = f"{100 * (row['killed'] + row['timeout']) / tested:5.1f}%" if tested else "   -"
    name = str(meta.relative_to(base / "mutants"))[: -len(".meta")]
    print(f"{name:44} " + " ".join(f"{row[c]:>9}" for c in cols) + f" {n:>6} {score:>6}")
n = sum(tot.values())
tested = n - tot["no tests"] - tot["not run"]
score = f"{100 * (tot['killed'] + tot['timeout']) / tested:5.1f}%" if tested else "   -"
print(f"{'TOTAL ' + group:44} " + " ".join(f"{tot[c]:>9}" for c in cols) + f" {n:>6} {score:>6}")
EOF
}

groups=("$@")
[ ${#groups[@]} -gt 0 ] || groups=(tokens mtls scopes)
for group in "${groups[@]}"; do
  case $group in tokens | mtls | scopes) ;; *) echo "unknown group: $group" >&2; exit 2 ;; esac
done

for group in "${groups[@]}"; do
  prepare "$group"
  start=$SECONDS
  echo "== mutmut run: $group (workers: $jobs, working copy: $workdir/$group)"
  # mutmut draws a spinner on the terminal; its full output goes to GROUP.log
  names=()
  if [ "${MUTATION_RERUN:-0}" = 1 ]; then
    mapfile -t names < <(cd "$workdir/$group" && "$root/.venv/bin/mutmut" results 2>/dev/null |
      sed -n 's/^ *\([^ ]*\): survived$/\1/p')
    echo "   surviving mutants run again: ${#names[@]}"
    [ ${#names[@]} -gt 0 ] || continue
  fi
  (cd "$workdir/$group" && "$root/.venv/bin/mutmut" run --max-children "$jobs" "${names[@]}") \
    >"$workdir/$group.log" 2>&1 || true
  tr '\r' '\n' <"$workdir/$group.log" | grep -a -E 'done in|[Ff]ailed|FAILED|Stopping|mutations/second' | grep -av '^⠋' || true
  echo "== $group: $((SECONDS - start)) s"
  (cd "$workdir/$group" && "$root/.venv/bin/mutmut" results >"$workdir/$group.survivors.txt") || true
done
for group in "${groups[@]}"; do
  summary "$group"
done
echo
echo "Survivors per group: $workdir/GROUP.survivors.txt; inspect one with"
echo "  (cd $workdir/GROUP && $root/.venv/bin/mutmut show MUTANT_NAME)"
