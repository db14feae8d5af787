"""``bankguard check-policy FILE``: exit 0 and a summary, 1 and every problem, 2 when unreadable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bankguard.cli import main

CONSOLE_SCRIPT = Path(sys.executable).parent / "bankguard"

GOOD = """\
profile: obie
trusted_proxies: [10.0.0.0/8]
request: {max_body_bytes: 64KiB}
routes:
  operations:
    - {method: GET, path: /accounts, public: true}
    - {method: GET, path: "/accounts/{AccountId}", public: true}
auth: {mode: report}
"""

BAD = """\
profile: fapi3
colour: blue
trusted_proxies: [0.0.0.0/0]
request: {max_body_bytes: 1XB}
routes:
  operations:
    - {method: get, path: /a, public: true}
    - {method: GET, path: /b, foo: 1}
"""
BAD_PATHS = [
    "profile",
    "colour",
    "trusted_proxies[0]",
    "request.max_body_bytes",
    "routes.operations[0].method",
    "routes.operations[1].foo",
]


def write(tmp_path: Path, text: str, name: str = "bankguard.yaml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_good_policy_exits_0_with_a_summary(tmp_path, capsys):
    path = write(tmp_path, GOOD)
    assert main(["check-policy", path]) == 0
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    assert out.startswith(f"{path}: OK\n")
    assert "profile            obie" in out
    assert "10.0.0.0/8" in out
    assert "body <= 64 KiB" in out
    assert "2 operations (2 public)" in out
    assert "/accounts/{AccountId}" in out
    assert "auth      [report ]" in out
    assert "invalid ids: reject" in out


def test_bad_policy_exits_1_and_names_every_problem(tmp_path, capsys):
    path = write(tmp_path, BAD)
    assert main(["check-policy", path]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert lines[0] == f"{path}: {len(BAD_PATHS)} problem(s)"
    assert sorted(line.strip().split(": ", 1)[0] for line in lines[1:]) == sorted(BAD_PATHS)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("a: 1\na: 2\n", "duplicate key 'a' at line 2", id="duplicate-key"),
        pytest.param("routes: [\n", "YAML syntax error", id="syntax"),
        pytest.param("audit: {sink: 'no_such_module_for_bankguard:sink'}\n", "audit.sink: ", id="sink"),
        pytest.param(
            "routes:\n  operations: [{method: GET, path: /a}]\n", "operations[0].public", id="public"
        ),
    ],
)
def test_policy_errors_found_while_loading_exit_1(tmp_path, capsys, text, expected):
    assert main(["check-policy", write(tmp_path, text)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert expected in err


def test_missing_file_exits_2(tmp_path, capsys):
    path = str(tmp_path / "absent.yaml")
    assert main(["check-policy", path]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"{path}: no such file\n"


def test_unreadable_path_exits_2_without_a_traceback(tmp_path, capsys):
    assert main(["check-policy", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"{tmp_path}: cannot read")


def test_file_that_is_not_utf8_exits_2_without_a_traceback(tmp_path, capsys):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("auth: {realm: b\u00e4nk}\n".encode("latin-1"))
    assert main(["check-policy", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"{path}: cannot read")


@pytest.mark.parametrize(
    "argv",
    [pytest.param([], id="no-command"), pytest.param(["check-policy"], id="no-file")],
)
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "usage: bankguard" in capsys.readouterr().err


def run_console_script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - fixed executable, test-controlled arguments
        [str(CONSOLE_SCRIPT), *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_console_script_exit_codes(tmp_path):
    good = run_console_script("check-policy", write(tmp_path, GOOD, "good.yaml"))
    assert good.returncode == 0
    assert ": OK" in good.stdout
    assert "auth runs in report mode" in good.stderr  # the load-time warning reaches the operator
    assert "profile            obie" in good.stdout

    bad_path = write(tmp_path, BAD, "bad.yaml")
    bad = run_console_script("check-policy", bad_path)
    assert (bad.returncode, bad.stdout) == (1, "")
    assert "Traceback" not in bad.stderr
    for path in BAD_PATHS:
        assert f"  {path}: " in bad.stderr

    missing = run_console_script("check-policy", str(tmp_path / "absent.yaml"))
    assert (missing.returncode, missing.stdout) == (2, "")
    assert "no such file" in missing.stderr


_SPEC = """
openapi: 3.0.3
info: {title: t, version: "1"}
paths:
  /accounts:
    get:
      parameters:
        - {name: limit, in: query, schema: {type: integer, enum: [1, 1]}}
      responses: {"200": {description: ok}}
"""
_TOKENS = """
tokens:
  issuers:
    - issuer: https://as.bank.example
      audiences: [https://api.bank.example]
      algorithms: [ES256]
      jwks_uri: https://as.bank.example/jwks
"""


def test_check_policy_loads_the_openapi_spec_and_prints_its_warnings(tmp_path, capsys):
    (tmp_path / "spec.yaml").write_text(_SPEC)
    policy = tmp_path / "policy.yaml"
    policy.write_text(_TOKENS + "openapi: {spec: spec.yaml}\n")
    assert main(["check-policy", str(policy)]) == 0
    out = capsys.readouterr().out
    assert "OpenAPI 3.0.3, 1 operation, loaded in" in out
    assert "warning:" in out
    assert "enum" in out


def test_check_policy_refuses_a_spec_needing_tokens_without_a_token_source(tmp_path, capsys):
    (tmp_path / "spec.yaml").write_text(_SPEC)
    policy = tmp_path / "policy.yaml"
    policy.write_text("openapi: {spec: spec.yaml}\n")
    assert main(["check-policy", str(policy)]) == 1
    err = capsys.readouterr().err
    assert "openapi.spec" in err
    assert "1 operation of the spec needs a token" in err


def test_check_policy_reports_an_unusable_spec_without_a_traceback(tmp_path, capsys):
    (tmp_path / "spec.yaml").write_text(
        "openapi: 3.0.3\npaths: {/a: {get: {responses: {'200': {$ref: '#/nope'}}}}}\n"
    )
    policy = tmp_path / "policy.yaml"
    policy.write_text(_TOKENS + "openapi: {spec: spec.yaml}\n")
    assert main(["check-policy", str(policy)]) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert "problem" in captured.err
