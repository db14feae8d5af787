"""Policy loading: Python, from_dict, from_yaml, from_yaml_text; every error names its YAML path."""

from __future__ import annotations

import dataclasses
import io
import ipaddress
import logging
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bankguard import (
    AuditPolicy,
    AuthPolicy,
    InteractionIdPolicy,
    Policy,
    ProblemsPolicy,
    RequestPolicy,
    ResponseHeadersPolicy,
    RouteSpec,
    RoutesPolicy,
)
from bankguard.audit import resolve_sink
from bankguard.errors import ConfigurationError

GOOD = {
    "profile": "fapi2",
    "trusted_proxies": ["10.0.0.0/8", "2001:db8::/32"],
    "request": {"max_body_bytes": "64KiB", "max_header_bytes": 16384},
    "routes": {
        "operations": [
            {"method": "GET", "path": "/accounts", "public": True},
            {"method": "GET", "path": "/accounts/{AccountId}", "id": "get-account", "public": True},
        ]
    },
    "auth": {"realm": "bank"},
    "interaction_id": {"invalid": "reject"},
    "problems": {"type_base": "urn:bank:problems:"},
    "audit": {"logger": "bank.audit"},
}

GOOD_YAML = """\
profile: fapi2
trusted_proxies: [10.0.0.0/8, "2001:db8::/32"]
request:
  max_body_bytes: 64KiB
  max_header_bytes: 16384
routes:
  operations:
    - {method: GET, path: /accounts, public: true}
    - method: GET
      path: /accounts/{AccountId}
      id: get-account
      public: true
auth: {realm: bank}
interaction_id: {invalid: reject}
problems: {type_base: "urn:bank:problems:"}
audit: {logger: bank.audit}
"""


def problems_of(data: Any) -> dict[str, str]:
    """Build ``data``; return ``{path: message}`` of the ConfigurationError it must raise."""
    with pytest.raises(ConfigurationError) as info:
        Policy.from_dict(data)
    return {p.path: p.message for p in info.value.problems}


def public_op(method: str = "GET", path: str = "/a", **extra: Any) -> dict[str, Any]:
    return {"method": method, "path": path, "public": True, **extra}


# -- the three ways to build a policy ------------------------------------------------------


def python_policy() -> Policy:
    return Policy(
        profile="fapi2",
        trusted_proxies=(ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32")),
        request=RequestPolicy(max_body_bytes=64 * 1024, max_header_bytes=16384),
        routes=RoutesPolicy(
            operations=(
                RouteSpec(method="GET", path="/accounts", public=True),
                RouteSpec(method="GET", path="/accounts/{AccountId}", id="get-account", public=True),
            )
        ),
        auth=AuthPolicy(realm="bank"),
        interaction_id=InteractionIdPolicy(invalid="reject"),
        problems=ProblemsPolicy(type_base="urn:bank:problems:"),
        audit=AuditPolicy(logger="bank.audit"),
    )


def test_python_from_dict_and_yaml_build_the_same_policy(tmp_path):
    path = tmp_path / "bankguard.yaml"
    path.write_text(GOOD_YAML, encoding="utf-8")
    built = [
        python_policy(),
        Policy.from_dict(GOOD),
        Policy.from_yaml_text(GOOD_YAML),
        Policy.from_yaml(path),
        Policy.from_yaml(str(path)),
        Policy.from_yaml(io.StringIO(GOOD_YAML)),
    ]
    assert all(p == built[0] for p in built)
    policy = built[0]
    assert policy.request.max_body_bytes == 65536
    assert policy.routes.operations[0].id == "GET /accounts"
    assert policy.routes.operations[1].id == "get-account"
    assert policy.trusted_proxies[1] == ipaddress.ip_network("2001:db8::/32")


@pytest.mark.parametrize("data", [None, {}], ids=["none", "empty"])
def test_empty_policy_has_secure_defaults(data):
    policy = Policy.from_dict(data)
    assert policy == Policy()
    assert policy.profile == "generic"
    assert policy.trusted_proxies == ()
    assert policy.routes.undeclared == "deny"
    assert policy.response_headers == ResponseHeadersPolicy(cache_control="no-store", nosniff=True)
    assert Policy.from_yaml_text("") == policy


def test_policy_is_frozen():
    policy = Policy.from_dict(GOOD)
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.profile = "obie"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.request.max_body_bytes = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.routes.operations[0].public = False  # type: ignore[misc]


def test_policy_is_hashable_and_equal_when_built_twice():
    first, second = Policy.from_dict(GOOD), Policy.from_yaml_text(GOOD_YAML)
    assert first == second
    assert first is not second
    assert hash(first) == hash(second)
    assert len({first, second}) == 1
    assert Policy.from_dict({**GOOD, "profile": "obie"}) != first


# -- unknown keys and wrong types --------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "path"),
    [
        pytest.param({"foo": 1}, "foo", id="top-level"),
        pytest.param({"request": {"max_bdy_bytes": 1}}, "request.max_bdy_bytes", id="section"),
        pytest.param(
            {"routes": {"operations": [public_op(), public_op("POST", foo=1)]}},
            "routes.operations[1].foo",
            id="inside-list",
        ),
        pytest.param({"audit": {"sink": "logging", "level": "info"}}, "audit.level", id="audit"),
    ],
)
def test_unknown_key_is_named_with_its_path(data, path):
    problems = problems_of(data)
    assert list(problems) == [path]
    assert "unknown key" in problems[path]


@pytest.mark.parametrize(
    ("data", "path"),
    [
        pytest.param({"request": {"max_body_bytes": True}}, "request.max_body_bytes", id="bool-for-size"),
        pytest.param({"request": {"max_body_bytes": 1.5}}, "request.max_body_bytes", id="float-for-size"),
        pytest.param({"request": {"max_body_bytes": 0}}, "request.max_body_bytes", id="zero-size"),
        pytest.param({"request": {"max_body_bytes": -1}}, "request.max_body_bytes", id="negative-size"),
        pytest.param({"request": {"max_body_bytes": "1XB"}}, "request.max_body_bytes", id="unknown-unit"),
        pytest.param({"request": {"max_body_bytes": "64 kib"}}, "request.max_body_bytes", id="unit-case"),
        pytest.param({"request": {"max_body_bytes": ""}}, "request.max_body_bytes", id="empty-size"),
        pytest.param({"response_headers": {"nosniff": 1}}, "response_headers.nosniff", id="int-for-bool"),
        pytest.param({"response_headers": {"nosniff": "yes"}}, "response_headers.nosniff", id="str-for-bool"),
        pytest.param(
            {"routes": {"operations": [public_op(public=1)]}},
            "routes.operations[0].public",
            id="int-for-public",
        ),
        pytest.param({"auth": {"realm": 5}}, "auth.realm", id="int-for-str"),
        pytest.param({"routes": []}, "routes", id="list-for-section"),
        pytest.param({"routes": {"operations": {}}}, "routes.operations", id="mapping-for-list"),
        pytest.param({"routes": {"operations": ["GET /a"]}}, "routes.operations[0]", id="str-for-op"),
        pytest.param(
            {"routes": {"operations": [{"path": "/a", "public": True}]}},
            "routes.operations[0].method",
            id="missing-required",
        ),
        pytest.param({"trusted_proxies": "10.0.0.0/8"}, "trusted_proxies", id="str-for-list"),
        pytest.param({"trusted_proxies": [10]}, "trusted_proxies[0]", id="int-for-network"),
    ],
)
def test_wrong_type_is_named_with_its_path(data, path):
    assert list(problems_of(data)) == [path]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(65536, 65536, id="int"),
        pytest.param("512", 512, id="digits"),
        pytest.param("64KiB", 65536, id="KiB"),
        pytest.param("1MB", 1_000_000, id="MB"),
        pytest.param("1 MiB", 1024 * 1024, id="MiB-spaced"),
        pytest.param("2KB", 2000, id="KB"),
        pytest.param("10B", 10, id="B"),
        pytest.param("1GiB", 1024**3, id="GiB"),
    ],
)
def test_sizes_accept_integers_and_units(value, expected):
    policy = Policy.from_dict({"request": {"max_body_bytes": value}})
    assert policy.request.max_body_bytes == expected


@pytest.mark.parametrize(
    ("data", "path"),
    [
        pytest.param({"routes": {"mode": "block"}}, "routes.mode", id="mode-block"),
        pytest.param({"request": {"mode": True}}, "request.mode", id="mode-bool"),
        pytest.param({"profile": "fapi3"}, "profile", id="profile"),
        pytest.param({"routes": {"undeclared": "maybe"}}, "routes.undeclared", id="undeclared"),
        pytest.param({"interaction_id": {"invalid": "drop"}}, "interaction_id.invalid", id="invalid"),
    ],
)
def test_bad_literal_lists_the_allowed_values(data, path):
    problems = problems_of(data)
    assert list(problems) == [path]
    assert "use one of" in problems[path]


# -- operations ------------------------------------------------------------------------------


def test_sections_built_in_python_are_converted_and_checked():
    assert RequestPolicy(max_body_bytes="64KiB").max_body_bytes == 65536  # type: ignore[arg-type]
    assert Policy(trusted_proxies=("10.0.0.0/8",)).trusted_proxies == (  # type: ignore[arg-type]
        ipaddress.ip_network("10.0.0.0/8"),
    )
    with pytest.raises(ConfigurationError) as info:
        RequestPolicy(max_body_bytes=0, mode="block")  # type: ignore[arg-type]
    assert {p.path for p in info.value.problems} == {"max_body_bytes", "mode"}
    with pytest.raises(ConfigurationError) as info:
        Policy(request={"max_body_bytes": "1XB"})  # type: ignore[arg-type]
    assert info.value.path == "request.max_body_bytes"


def test_CFG_09_non_public_operation_is_refused_until_tokens_are_configured():
    problems = problems_of({"routes": {"operations": [public_op(), {"method": "POST", "path": "/a"}]}})
    assert list(problems) == ["routes.operations[1].public"]
    assert "public: true" in problems["routes.operations[1].public"]


def test_CFG_09_non_public_operation_refused_from_python():
    with pytest.raises(ConfigurationError) as info:
        Policy(routes=RoutesPolicy(operations=(RouteSpec(method="GET", path="/a"),)))
    assert info.value.path == "routes.operations[0].public"


@pytest.mark.parametrize(
    ("operations", "paths"),
    [
        pytest.param(
            [public_op(), public_op()],
            {"routes.operations[1]", "routes.operations[1].id"},
            id="same-method-and-path",
        ),
        pytest.param(
            [public_op(path="/a/{x}"), public_op(path="/a/{y}")],
            {"routes.operations[1]"},
            id="same-template-other-name",
        ),
        pytest.param(
            [public_op(id="x"), public_op("POST", id="x")],
            {"routes.operations[1].id"},
            id="same-id",
        ),
        pytest.param(
            [public_op("GET", "/b"), public_op("POST", "/a", id="GET /b")],
            {"routes.operations[1].id"},
            id="id-equals-default-id",
        ),
    ],
)
def test_duplicate_operations_and_ids_are_refused(operations, paths):
    problems = problems_of({"routes": {"operations": operations}})
    assert set(problems) == paths
    assert all("repeats operations[0]" in m for m in problems.values())


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("a", id="relative"),
        pytest.param("", id="empty"),
        pytest.param("/a/../b", id="dot-dot"),
        pytest.param("/a/./b", id="dot"),
        pytest.param("/a/{x", id="unbalanced-open"),
        pytest.param("/a/x}", id="unbalanced-close"),
        pytest.param("/a/{}", id="empty-name"),
        pytest.param("/a/{1x}", id="bad-name"),
        pytest.param("/a/{x}/{x}", id="repeated-name"),
    ],
)
def test_bad_path_template_is_refused(path):
    problems = problems_of({"routes": {"operations": [public_op(path=path)]}})
    assert list(problems) == ["routes.operations[0].path"]


@pytest.mark.parametrize("method", ["get", "Get", "GET /", "", "G\u00c9T"], ids=repr)
def test_method_must_be_an_upper_case_token(method):
    assert list(problems_of({"routes": {"operations": [public_op(method)]}})) == [
        "routes.operations[0].method"
    ]


def test_template_and_method_problems_from_python_are_relative():
    with pytest.raises(ConfigurationError) as info:
        RouteSpec(method="get", path="x")
    assert {p.path for p in info.value.problems} == {"method", "path"}


# -- cross-field and value checks ---------------------------------------------------------


def test_header_field_cap_must_not_exceed_header_cap():
    problems = problems_of({"request": {"max_header_bytes": "1KiB", "max_header_field_bytes": "2KiB"}})
    assert list(problems) == ["request.max_header_field_bytes"]


def test_CFG_04_refuses_0_0_0_0():
    problems = problems_of({"trusted_proxies": ["10.0.0.0/8", "0.0.0.0/0"]})
    assert list(problems) == ["trusted_proxies[1]"]
    assert "0.0.0.0/0" in problems["trusted_proxies[1]"]


def test_CFG_04_refuses_ipv6_default_route():
    assert list(problems_of({"trusted_proxies": ["::/0"]})) == ["trusted_proxies[0]"]


@pytest.mark.parametrize(
    ("network", "accepted"),
    [
        pytest.param("10.0.0.0/8", True, id="v4-slash-8"),
        pytest.param("10.0.0.0/7", False, id="v4-slash-7"),
        pytest.param("128.0.0.0/1", False, id="v4-half-the-internet"),
        pytest.param("2001::/16", True, id="v6-slash-16"),
        pytest.param("2000::/3", False, id="v6-global-unicast"),
        pytest.param("::ffff:0:0/96", False, id="v6-all-ipv4-mapped"),
        pytest.param("::ffff:10.0.0.0/104", True, id="v6-mapped-slash-8"),
    ],
)
def test_CFG_04_refuses_networks_wider_than_the_bound(network, accepted):
    if accepted:
        assert Policy.from_dict({"trusted_proxies": [network]}).trusted_proxies == (
            ipaddress.ip_network(network),
        )
    else:
        assert list(problems_of({"trusted_proxies": [network]})) == ["trusted_proxies[0]"]


@pytest.mark.parametrize(
    "network",
    [
        pytest.param(ipaddress.ip_network("0.0.0.0/0"), id="ipv4"),
        pytest.param(ipaddress.ip_network("::/0"), id="ipv6"),
        pytest.param("0.0.0.0/0", id="string"),
    ],
)
def test_CFG_04_refuses_default_route_from_python(network):
    # A policy built in Python must meet the same rule as one loaded from YAML.
    with pytest.raises(ConfigurationError) as info:
        Policy(trusted_proxies=(network,))
    assert info.value.path == "trusted_proxies[0]"


@pytest.mark.parametrize(
    "cidr",
    ["10.0.0.1/8", "nope", "10.0.0.0/33", "300.1.1.1", "10.0.0.0/8/8", "fe80::1/200"],
)
def test_CFG_04_bad_cidr_is_refused(cidr):
    problems = problems_of({"trusted_proxies": ["192.168.0.0/16", cidr]})
    assert list(problems) == ["trusted_proxies[1]"]
    assert "is not a network" in problems["trusted_proxies[1]"]


def test_trusted_proxies_accept_single_addresses():
    policy = Policy.from_dict({"trusted_proxies": ["10.1.2.3", "::1"]})
    assert policy.trusted_proxies == (ipaddress.ip_network("10.1.2.3/32"), ipaddress.ip_network("::1/128"))


@pytest.mark.parametrize(
    "realm",
    ['a"b', "a\\b", "", "r\u00e9alm", "a\rb"],
    ids=["quote", "backslash", "empty", "non-ascii", "cr"],
)
def test_AUTH_08_realm_must_be_a_valid_auth_param(realm):
    assert list(problems_of({"auth": {"realm": realm}})) == ["auth.realm"]


@pytest.mark.parametrize(
    ("data", "path"),
    [
        pytest.param({"auth": {"realm": "api\n"}}, "auth.realm", id="realm"),
        pytest.param(
            {"interaction_id": {"header": "x-fapi-interaction-id\n"}}, "interaction_id.header", id="header"
        ),
        pytest.param(
            {"routes": {"operations": [public_op("GET\n")]}}, "routes.operations[0].method", id="method"
        ),
        pytest.param(
            {"problems": {"type_base": "https://bank.example/problems/\n"}}, "problems.type_base", id="type"
        ),
    ],
)
def test_trailing_newline_is_refused(data, path):
    # ``re.match(r"...$")`` also matches before a final "\n"; a header name or value with
    # a line break must never reach the response.
    assert list(problems_of(data)) == [path]


@pytest.mark.parametrize("type_base", ["ftp://x/", "problems/", "", "https://a b/"])
def test_type_base_must_be_an_absolute_uri_prefix(type_base):
    assert list(problems_of({"problems": {"type_base": type_base}})) == ["problems.type_base"]


@pytest.mark.parametrize(
    "type_base", ["https://dev.bank.example/errors/", "urn:bank:", "tag:bank.example,2024:"]
)
def test_type_base_accepts_http_urn_and_tag(type_base):
    assert Policy.from_dict({"problems": {"type_base": type_base}}).problems.type_base == type_base


@pytest.mark.parametrize("header", ["x fapi", "", "x-id:"], ids=repr)
def test_interaction_header_must_be_a_token(header):
    assert list(problems_of({"interaction_id": {"header": header}})) == ["interaction_id.header"]


def test_interaction_header_is_lower_cased():
    policy = Policy.from_dict({"interaction_id": {"header": "X-Request-ID"}})
    assert policy.interaction_id.header == "x-request-id"


@pytest.mark.parametrize("value", ["no-store\r\nSet-Cookie: a=b", ""], ids=["crlf", "empty"])
def test_cache_control_must_be_one_line(value):
    assert list(problems_of({"response_headers": {"cache_control": value}})) == [
        "response_headers.cache_control"
    ]


# -- audit sink ----------------------------------------------------------------------------


@pytest.mark.parametrize("sink", ["nope", "a b:c", 5, ["logging"]], ids=repr)
def test_audit_sink_syntax_is_checked_at_load(sink):
    assert list(problems_of({"audit": {"sink": sink}})) == ["audit.sink"]


@pytest.mark.parametrize(
    "sink",
    ["no_such_module_for_bankguard:handler", "bankguard.audit:no_such_sink", "bankguard:__version__"],
    ids=["module", "attribute", "not-callable"],
)
def test_audit_sink_that_cannot_be_resolved_names_audit_sink(sink):
    policy = Policy.from_dict({"audit": {"sink": sink}})
    with pytest.raises(ConfigurationError) as info:
        resolve_sink(policy.audit)
    assert info.value.path == "audit.sink"


def test_audit_sink_resolves_an_importable_callable():
    import json

    policy = Policy.from_dict({"audit": {"sink": "json:dumps"}})
    assert resolve_sink(policy.audit) is json.dumps


# -- YAML ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "lines"),
    [
        pytest.param("profile: generic\nprofile: obie\n", ("line 2", "first at line 1"), id="top-level"),
        pytest.param(
            "routes:\n  mode: enforce\n  undeclared: deny\n  mode: report\n",
            ("line 4", "first at line 2"),
            id="nested",
        ),
        pytest.param(
            "routes:\n  operations:\n    - {method: GET, path: /a, method: POST}\n",
            ("line 3", "first at line 3"),
            id="flow-mapping",
        ),
    ],
)
def test_yaml_duplicate_keys_are_refused_with_line_numbers(text, lines):
    with pytest.raises(ConfigurationError) as info:
        Policy.from_yaml_text(text)
    message = str(info.value)
    assert "duplicate key" in message
    for line in lines:
        assert line in message


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("routes: [\n", id="unclosed-flow"),
        pytest.param("a: b: c\n", id="mapping-in-scalar"),
        pytest.param("request:\n  mode: enforce\n mode: report\n", id="indentation"),
        pytest.param("profile: !!python/object:os.system x\n", id="python-tag"),
        pytest.param("profile: *missing\n", id="unknown-alias"),
        pytest.param("\t- a\n", id="tab"),
    ],
)
def test_yaml_syntax_error_is_a_configuration_error(text):
    with pytest.raises(ConfigurationError) as info:
        Policy.from_yaml_text(text)
    assert "YAML syntax error" in str(info.value)
    assert not isinstance(info.value.__cause__, yaml.YAMLError)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("? [a, b]\n: 1\n", id="sequence-key"),
        pytest.param("? {a: 1}\n: 1\n", id="mapping-key"),
        pytest.param("routes:\n  ? [mode]\n  : report\n", id="nested-sequence-key"),
    ],
)
def test_yaml_complex_key_is_a_configuration_error(text):
    with pytest.raises(ConfigurationError):
        Policy.from_yaml_text(text)


@pytest.mark.parametrize(
    ("text", "path"),
    [
        pytest.param("- profile: generic\n", "", id="list-document"),
        pytest.param("just text\n", "", id="scalar-document"),
        pytest.param("1: x\n", "1", id="int-key"),
        pytest.param("request: {max_body_bytes: 2020-01-01}\n", "request.max_body_bytes", id="date"),
        pytest.param("response_headers: {nosniff: 'true'}\n", "response_headers.nosniff", id="quoted-bool"),
    ],
)
def test_yaml_values_are_checked_like_dicts(text, path):
    with pytest.raises(ConfigurationError) as info:
        Policy.from_yaml_text(text)
    assert [p.path for p in info.value.problems] == [path]


def test_several_problems_are_reported_at_once():
    text = """\
profile: fapi3
colour: blue
trusted_proxies: [0.0.0.0/0, 10.0.0.1/8]
request:
  max_body_bytes: 1XB
  max_header_bytes: 100
  max_header_field_bytes: 200
routes:
  mode: block
  operations:
    - {method: get, path: /a, public: true}
    - {method: GET, path: /b, public: true, foo: 1}
auth: {realm: 'a"b'}
"""
    with pytest.raises(ConfigurationError) as info:
        Policy.from_yaml_text(text)
    paths = {p.path for p in info.value.problems}
    assert paths == {
        "profile",
        "colour",
        "trusted_proxies[0]",
        "trusted_proxies[1]",
        "request.max_body_bytes",
        "routes.mode",
        "routes.operations[0].method",
        "routes.operations[1].foo",
        "auth.realm",
    }
    message = str(info.value)
    assert all(path in message for path in paths)
    assert info.value.path == info.value.problems[0].path


def test_cross_field_checks_run_alongside_unknown_keys():
    problems = problems_of({"request": {"max_header_bytes": 100, "max_header_field_bytes": 200, "x": 1}})
    assert set(problems) == {"request.x", "request.max_header_field_bytes"}


# -- profiles and load-time warnings --------------------------------------------------------


@pytest.mark.parametrize(
    ("profile", "expected"),
    [
        pytest.param("generic", "replace", id="generic"),
        pytest.param("fapi2", "replace", id="fapi2"),
        pytest.param("nextgenpsd2", "replace", id="nextgenpsd2"),
        pytest.param("fapi1-adv", "reject", id="fapi1-adv"),
        pytest.param("obie", "reject", id="obie"),
    ],
)
def test_FAPI_10_profile_default_for_invalid_interaction_id(profile, expected):
    assert Policy.from_dict({"profile": profile}).interaction_id.invalid == expected
    assert Policy(profile=profile).interaction_id.invalid == expected


@pytest.mark.parametrize(
    ("profile", "explicit"),
    [("obie", "replace"), ("fapi1-adv", "replace"), ("generic", "reject"), ("fapi2", "reject")],
)
def test_FAPI_10_explicit_interaction_id_setting_wins(profile, explicit):
    policy = Policy.from_dict({"profile": profile, "interaction_id": {"invalid": explicit}})
    assert policy.interaction_id.invalid == explicit


@pytest.mark.parametrize("section", ["request", "routes", "auth", "interaction_id"])
def test_report_mode_logs_a_warning_at_load(caplog, section):
    with caplog.at_level(logging.WARNING, logger="bankguard"):
        Policy.from_dict({section: {"mode": "report"}})
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "bankguard"]
    assert len(warnings) == 1
    assert f"{section} runs in report mode" in warnings[0].getMessage()


def test_undeclared_allow_logs_a_warning_and_enforce_logs_nothing(caplog):
    with caplog.at_level(logging.WARNING, logger="bankguard"):
        Policy.from_dict(GOOD)
    assert caplog.records == []
    with caplog.at_level(logging.WARNING, logger="bankguard"):
        Policy.from_dict({"routes": {"undeclared": "allow"}})
    assert ["undeclared" in r.getMessage() for r in caplog.records] == [True]


@pytest.mark.parametrize(
    ("section", "needle"),
    [
        pytest.param({"cache_control": "max-age=60"}, "no-store", id="cacheable"),
        pytest.param({"nosniff": False}, "nosniff", id="sniffable"),
    ],
)
def test_weakened_response_headers_log_a_warning(caplog, section, needle):
    with caplog.at_level(logging.WARNING, logger="bankguard"):
        Policy.from_dict({"response_headers": section})
    assert [needle in r.getMessage() for r in caplog.records] == [True]


# -- property: the loader never fails with anything but ConfigurationError ----------------

_KEYS = sorted(
    {
        f.name
        for cls in (Policy, RequestPolicy, RoutesPolicy, RouteSpec, AuthPolicy, InteractionIdPolicy)
        for f in dataclasses.fields(cls)
    }
    | {
        f.name
        for cls in (ResponseHeadersPolicy, ProblemsPolicy, AuditPolicy)
        for f in dataclasses.fields(cls)
    }
)
_WORDS = [
    "enforce", "report", "deny", "allow", "replace", "reject", "generic", "fapi2", "obie",
    "GET", "POST", "/a", "/a/{x}", "/a/{x}/{x}", "{", "64KiB", "1MB", "1XB", "0",
    "10.0.0.0/8", "0.0.0.0/0", "::/0", "::1", "logging", "json:dumps", "x:y", "urn:x:", "api",
]  # fmt: skip
_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12) | st.sampled_from(_WORDS)
)
_json = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(_KEYS) | st.text(max_size=6), children, max_size=5)
    ),
    max_leaves=25,
)
_operation = st.dictionaries(st.sampled_from(["method", "path", "id", "public", "foo"]), _scalars, max_size=4)
_sections = st.fixed_dictionaries(
    {},
    optional={
        "profile": _scalars,
        "trusted_proxies": st.lists(_scalars, max_size=3) | _scalars,
        "request": st.dictionaries(st.sampled_from(_KEYS), _scalars, max_size=4),
        "routes": st.fixed_dictionaries(
            {},
            optional={
                "mode": _scalars,
                "undeclared": _scalars,
                "operations": st.lists(_operation, max_size=3),
            },
        ),
        "auth": st.dictionaries(st.sampled_from(["mode", "realm"]), _scalars, max_size=2),
        "interaction_id": st.dictionaries(
            st.sampled_from(["mode", "header", "invalid"]), _scalars, max_size=3
        ),
        "audit": st.dictionaries(st.sampled_from(["sink", "logger"]), _scalars, max_size=2),
    },
)
_policies = (
    _sections | st.dictionaries(st.sampled_from(_KEYS) | st.text(max_size=6), _json, max_size=6) | _json
)


def _outcome(load: Any, data: Any) -> Any:
    try:
        return load(data)
    except ConfigurationError as exc:
        error = exc
    assert error.problems
    assert all(isinstance(p.path, str) and p.message for p in error.problems)
    return error.problems


@settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(_policies)
def test_from_dict_builds_a_policy_or_raises_configuration_error(data):
    result = _outcome(Policy.from_dict, data)
    if isinstance(result, Policy):
        assert hash(result) == hash(Policy.from_dict(data))


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(_sections)
def test_from_yaml_text_agrees_with_from_dict(data):
    text = yaml.safe_dump(data, allow_unicode=True, sort_keys=False)
    assume(yaml.safe_load(text) == data)  # PyYAML's own round-trip quirks are not under test
    assert _outcome(Policy.from_yaml_text, text) == _outcome(Policy.from_dict, data)
