"""Loading the ``ratelimit`` policy section (STANDARDS OWASP-14, OB-21, BG-07).

Every limit string is parsed when the policy loads; every mistake is a
:class:`~bankguard.errors.ConfigurationError` whose problem names the YAML path of the bad key
(``ratelimit.tiers.gold``, ``ratelimit.tpps.X``...). Operation ids are checked against the
declared operations when the :class:`~bankguard.Guard` is built.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bankguard import Guard, Policy
from bankguard.errors import ConfigurationError
from bankguard.policy_ratelimit import MAX_WINDOW_SECONDS, MAX_WINDOWS, windows_of
from bankguard.testing import EventCollector

OPERATIONS: list[dict[str, Any]] = [
    {"method": "GET", "path": "/accounts", "id": "GetAccounts", "public": True},
    {"method": "GET", "path": "/accounts/{AccountId}/balances", "id": "GetBalances", "public": True},
    {"method": "GET", "path": "/accounts/{AccountId}/transactions", "id": "GetTransactions", "public": True},
    {"method": "POST", "path": "/domestic-payments", "id": "CreateDomesticPayments", "public": True},
]

FULL: dict[str, Any] = {
    "enabled": True,
    "mode": "enforce",
    "strategy": "moving-window",
    "on_storage_failure": "open",
    "headers": False,
    "tiers": {
        "default": "100/minute; 5000/day",
        "gold": {
            "limits": "1000 per minute; 20000/day",
            "operations": {"CreateDomesticPayments": "50/minute"},
        },
    },
    "tpps": {"PSDGB-FCA-123456": "gold", "tpp-client-1": "default"},
    "operations": {"GetTransactions": "20/minute"},
    "preauth": {"limits": "50/second", "ipv6_prefix": 56},
    "unattended": {
        "enabled": True,
        "limit": 4,
        "period": "1d",
        "operations": ["GetAccounts", "GetBalances", "GetTransactions"],
        "presence_headers": ["X-FAPI-Customer-IP-Address", "PSU-IP-Address"],
        "account_parameters": ["AccountId"],
        "error": "berlin-group",
    },
}

FULL_YAML = """\
routes:
  operations:
    - {method: GET, path: /accounts, id: GetAccounts, public: true}
    - {method: GET, path: "/accounts/{AccountId}/balances", id: GetBalances, public: true}
    - {method: GET, path: "/accounts/{AccountId}/transactions", id: GetTransactions, public: true}
    - {method: POST, path: /domestic-payments, id: CreateDomesticPayments, public: true}
ratelimit:
  enabled: true
  strategy: sliding-window-counter
  tiers:
    default: "100/minute; 5000/day"
    gold:
      limits: 1000/minute; 20000/day
      operations: {CreateDomesticPayments: 50/minute}
  tpps: {PSDGB-FCA-123456: gold}
  operations: {GetTransactions: 20/minute}
  preauth: {limits: 50/second}
  unattended: {enabled: true, operations: [GetAccounts, GetBalances, GetTransactions]}
"""


def load(section: dict[str, Any]) -> Policy:
    return Policy.from_dict({"routes": {"operations": OPERATIONS}, "ratelimit": section})


def build_guard(section: dict[str, Any]) -> Guard:
    return Guard(load(section), sink=EventCollector())


def problem_paths(excinfo: pytest.ExceptionInfo[ConfigurationError]) -> list[str]:
    return [problem.path for problem in excinfo.value.problems]


# -- valid configurations -------------------------------------------------------------------


def test_every_key_of_the_section_loads() -> None:
    rl = load(FULL).ratelimit
    assert (rl.enabled, rl.mode, rl.strategy, rl.on_storage_failure, rl.headers) == (
        True,
        "enforce",
        "moving-window",
        "open",
        False,
    )
    tiers = dict(rl.tiers)
    assert set(tiers) == {"default", "gold"}
    assert windows_of(tiers["default"].limits) == ((100, 60), (5000, 86400))
    assert windows_of(tiers["gold"].limits) == ((1000, 60), (20000, 86400))
    assert tiers["default"].operations == ()
    assert [(op, windows_of(text)) for op, text in tiers["gold"].operations] == [
        ("CreateDomesticPayments", ((50, 60),))
    ]
    assert dict(rl.tpps) == {"PSDGB-FCA-123456": "gold", "tpp-client-1": "default"}
    assert [(op, windows_of(text)) for op, text in rl.operations] == [("GetTransactions", ((20, 60),))]
    assert rl.preauth.limits is not None
    assert windows_of(rl.preauth.limits) == ((50, 1),)
    assert rl.preauth.ipv6_prefix == 56
    un = rl.unattended
    assert (un.enabled, un.limit, un.period, un.error) == (True, 4, 86400.0, "berlin-group")
    assert un.operations == ("GetAccounts", "GetBalances", "GetTransactions")
    assert un.presence_headers == ("x-fapi-customer-ip-address", "psu-ip-address")
    assert un.account_parameters == ("AccountId",)


def test_the_guard_accepts_operation_ids_that_name_declared_operations() -> None:
    guard = build_guard(FULL)
    assert [check.name for check in guard.checks].count("ratelimit") == 2  # pre-auth and per-TPP


def test_tier_of_maps_listed_identities_and_defaults_the_rest() -> None:
    rl = load(FULL).ratelimit
    tiers = dict(rl.tiers)
    assert rl.tier_of("PSDGB-FCA-123456") is tiers["gold"]
    assert rl.tier_of("tpp-client-1") is tiers["default"]
    assert rl.tier_of("someone-else") is tiers["default"]


def test_defaults_are_off_and_safe() -> None:
    rl = Policy.from_dict({}).ratelimit
    assert (rl.enabled, rl.mode, rl.strategy, rl.on_storage_failure, rl.headers) == (
        False,
        "enforce",
        "sliding-window-counter",
        "closed",
        True,
    )
    assert rl.preauth.limits is None
    assert rl.preauth.ipv6_prefix == 64
    assert (rl.unattended.enabled, rl.unattended.limit, rl.unattended.period) == (False, 4, 86400.0)
    assert rl.unattended.presence_headers == ("x-fapi-customer-ip-address", "psu-ip-address")


@pytest.mark.parametrize(
    ("text", "windows"),
    [
        ("1000/minute", ((1000, 60),)),
        ("1000 per minute; 20000/day", ((1000, 60), (20000, 86400))),
        ("10/5 seconds", ((10, 5),)),
        ("1/second, 30/minute | 600/hour", ((1, 1), (30, 60), (600, 3600))),
        ("7 per 2 hours", ((7, 7200),)),
        ("3/year", ((3, 31104000),)),
    ],
)
def test_limit_strings_in_the_limits_notation_are_accepted(
    text: str, windows: tuple[tuple[int, int], ...]
) -> None:
    tier = dict(load({"enabled": True, "tiers": {"default": text}}).ratelimit.tiers)["default"]
    assert windows_of(tier.limits) == windows


def test_eight_windows_are_the_most_a_limit_may_have() -> None:
    text = "; ".join(f"{n}/{n} seconds" for n in range(1, MAX_WINDOWS + 1))
    tier = dict(load({"enabled": True, "tiers": {"default": text}}).ratelimit.tiers)["default"]
    assert len(windows_of(tier.limits)) == MAX_WINDOWS == 8


def test_a_window_of_exactly_a_year_and_a_day_is_the_longest_accepted() -> None:
    text = f"1/{MAX_WINDOW_SECONDS} seconds"
    tier = dict(load({"enabled": True, "tiers": {"default": text}}).ratelimit.tiers)["default"]
    assert windows_of(tier.limits) == ((1, 366 * 86400),)


def test_a_disabled_section_needs_no_default_tier() -> None:
    rl = load({"enabled": False, "tiers": {"gold": "10/second"}}).ratelimit
    assert rl.enabled is False
    guard = Guard(load({"enabled": False, "tiers": {"gold": "10/second"}}), sink=EventCollector())
    assert "ratelimit" not in [check.name for check in guard.checks]


def test_preauth_without_limits_adds_no_preauth_check() -> None:
    guard = build_guard({"enabled": True, "tiers": {"default": "10/second"}})
    assert [check.name for check in guard.checks].count("ratelimit") == 1


def test_yaml_policy_loads() -> None:
    rl = Policy.from_yaml_text(FULL_YAML).ratelimit
    tiers = dict(rl.tiers)
    assert windows_of(tiers["default"].limits) == ((100, 60), (5000, 86400))
    assert windows_of(dict(tiers["gold"].operations)["CreateDomesticPayments"]) == ((50, 60),)
    assert rl.tier_of("PSDGB-FCA-123456") is tiers["gold"]
    assert rl.unattended.operations == ("GetAccounts", "GetBalances", "GetTransactions")
    assert rl.preauth.limits is not None
    assert windows_of(rl.preauth.limits) == ((50, 1),)


# -- invalid configurations: the problem names the YAML path ---------------------------------

DEFAULT = {"default": "10/minute"}

INVALID: list[tuple[str, dict[str, Any], str]] = [
    # limit strings
    ("not a limit", {"tiers": {"default": "10/minute", "gold": "nonsense"}}, "ratelimit.tiers.gold"),
    ("unknown unit", {"tiers": {"default": "10/fortnight"}}, "ratelimit.tiers.default"),
    ("empty string", {"tiers": {"default": ""}}, "ratelimit.tiers.default"),
    ("trailing separator", {"tiers": {"default": "10/minute;"}}, "ratelimit.tiers.default"),
    ("negative amount", {"tiers": {"default": "-1/minute"}}, "ratelimit.tiers.default"),
    ("zero amount", {"tiers": {"default": "0/minute"}}, "ratelimit.tiers.default"),
    ("zero in a later window", {"tiers": {"default": "5/second; 0/hour"}}, "ratelimit.tiers.default"),
    ("duplicate window", {"tiers": {"default": "1/minute; 2/60 seconds"}}, "ratelimit.tiers.default"),
    ("same unit twice", {"tiers": {"default": "1/hour; 5 per hour"}}, "ratelimit.tiers.default"),
    (
        "nine windows",
        {"tiers": {"default": "; ".join(f"{n}/{n} seconds" for n in range(1, 10))}},
        "ratelimit.tiers.default",
    ),
    ("window over a year", {"tiers": {"default": "1/367 days"}}, "ratelimit.tiers.default"),
    ("zero-length window", {"tiers": {"default": "100/0 minutes"}}, "ratelimit.tiers.default"),
    ("zero-length window, per", {"tiers": {"default": "100 per 00 seconds"}}, "ratelimit.tiers.default"),
    (
        "bad tier limits in a mapping",
        {"tiers": {"default": "1/minute", "gold": {"limits": "often"}}},
        "ratelimit.tiers.gold.limits",
    ),
    (
        "bad tier operation limits",
        {"tiers": {"default": {"limits": "1/minute", "operations": {"GetBalances": "0/minute"}}}},
        "ratelimit.tiers.default.operations.GetBalances",
    ),
    (
        "bad operation limits",
        {"tiers": DEFAULT, "operations": {"GetBalances": "x"}},
        "ratelimit.operations.GetBalances",
    ),
    ("bad preauth limits", {"tiers": DEFAULT, "preauth": {"limits": "fast"}}, "ratelimit.preauth.limits"),
    (
        "zero preauth amount",
        {"tiers": DEFAULT, "preauth": {"limits": "0/second"}},
        "ratelimit.preauth.limits",
    ),
    # structure and cross references
    ("no default tier", {"tiers": {"gold": "10/minute"}}, "ratelimit.tiers"),
    ("no tiers at all", {}, "ratelimit.tiers"),
    ("tpp names an unknown tier", {"tiers": DEFAULT, "tpps": {"X": "gold"}}, "ratelimit.tpps.X"),
    (
        "tier mapping needs limits",
        {"tiers": {"default": {"operations": {}}}},
        "ratelimit.tiers.default.limits",
    ),
    (
        "unknown key in a tier",
        {"tiers": {"default": {"limits": "1/second", "burst": 5}}},
        "ratelimit.tiers.default.burst",
    ),
    ("unknown key in the section", {"tiers": DEFAULT, "burst": 5}, "ratelimit.burst"),
    (
        "tier name with a space",
        {"tiers": {"default": "1/second", "gold tier": "2/second"}},
        "ratelimit.tiers",
    ),
    ("tpp id with a space", {"tiers": DEFAULT, "tpps": {"bad id": "default"}}, "ratelimit.tpps"),
    (
        "operation id with a slash",
        {"tiers": DEFAULT, "operations": {"GET /accounts": "1/second"}},
        "ratelimit.operations",
    ),
    (
        "ipv6 prefix too short",
        {"tiers": DEFAULT, "preauth": {"ipv6_prefix": 16}},
        "ratelimit.preauth.ipv6_prefix",
    ),
    (
        "ipv6 prefix too long",
        {"tiers": DEFAULT, "preauth": {"ipv6_prefix": 129}},
        "ratelimit.preauth.ipv6_prefix",
    ),
    (
        "unattended without operations",
        {"tiers": DEFAULT, "unattended": {"enabled": True}},
        "ratelimit.unattended.operations",
    ),
    ("unattended limit zero", {"tiers": DEFAULT, "unattended": {"limit": 0}}, "ratelimit.unattended.limit"),
    (
        "unattended limit too high",
        {"tiers": DEFAULT, "unattended": {"limit": 1001}},
        "ratelimit.unattended.limit",
    ),
    (
        "unattended period too short",
        {"tiers": DEFAULT, "unattended": {"period": "30m"}},
        "ratelimit.unattended.period",
    ),
    (
        "unattended period fractional",
        {"tiers": DEFAULT, "unattended": {"period": 3600.5}},
        "ratelimit.unattended.period",
    ),
    (
        "unattended error shape",
        {"tiers": DEFAULT, "unattended": {"error": "obie"}},
        "ratelimit.unattended.error",
    ),
    (
        "presence header not a token",
        {"tiers": DEFAULT, "unattended": {"presence_headers": ["psu ip"]}},
        "ratelimit.unattended.presence_headers[0]",
    ),
    (
        "no presence headers",
        {"tiers": DEFAULT, "unattended": {"presence_headers": []}},
        "ratelimit.unattended.presence_headers",
    ),
    ("strategy", {"tiers": DEFAULT, "strategy": "token-bucket"}, "ratelimit.strategy"),
    ("mode", {"tiers": DEFAULT, "mode": "off"}, "ratelimit.mode"),
    ("on_storage_failure", {"tiers": DEFAULT, "on_storage_failure": "maybe"}, "ratelimit.on_storage_failure"),
    # values of the wrong type
    ("tier limit as a number", {"tiers": {"default": 100}}, "ratelimit.tiers.default"),
    ("tier limit as a list", {"tiers": {"default": ["1/second"]}}, "ratelimit.tiers.default"),
    ("tier limit null", {"tiers": {"default": None}}, "ratelimit.tiers.default"),
    (
        "tier mapping limits as a number",
        {"tiers": {"default": {"limits": 5}}},
        "ratelimit.tiers.default.limits",
    ),
    ("tiers as a string", {"tiers": "10/minute"}, "ratelimit.tiers"),
    ("tpp tier as a number", {"tiers": DEFAULT, "tpps": {"X": 5}}, "ratelimit.tpps.X"),
    ("tpps as a list", {"tiers": DEFAULT, "tpps": ["X"]}, "ratelimit.tpps"),
    (
        "operation limit as a number",
        {"tiers": DEFAULT, "operations": {"GetBalances": 5}},
        "ratelimit.operations.GetBalances",
    ),
    ("operations as a list", {"tiers": DEFAULT, "operations": ["GetBalances"]}, "ratelimit.operations"),
    (
        "unattended operations as a string",
        {"tiers": DEFAULT, "unattended": {"operations": "GetAccounts"}},
        "ratelimit.unattended.operations",
    ),
    (
        "unattended operation as a number",
        {"tiers": DEFAULT, "unattended": {"operations": [5]}},
        "ratelimit.unattended.operations[0]",
    ),
    ("preauth limits as a number", {"tiers": DEFAULT, "preauth": {"limits": 50}}, "ratelimit.preauth.limits"),
    (
        "ipv6 prefix as a string",
        {"tiers": DEFAULT, "preauth": {"ipv6_prefix": "64"}},
        "ratelimit.preauth.ipv6_prefix",
    ),
    ("enabled as a string", {"enabled": "yes", "tiers": DEFAULT}, "ratelimit.enabled"),
    ("headers as a string", {"tiers": DEFAULT, "headers": "no"}, "ratelimit.headers"),
    (
        "unattended limit as a string",
        {"tiers": DEFAULT, "unattended": {"limit": "4"}},
        "ratelimit.unattended.limit",
    ),
]


@pytest.mark.parametrize(("section", "path"), [(s, p) for _, s, p in INVALID], ids=[i for i, _, _ in INVALID])
def test_invalid_section_names_the_yaml_path(section: dict[str, Any], path: str) -> None:
    with pytest.raises(ConfigurationError) as excinfo:
        load({"enabled": True, **section})
    assert problem_paths(excinfo) == [path], excinfo.value.problems
    assert excinfo.value.path == path
    assert path in str(excinfo.value)


def test_every_bad_tier_is_reported_at_once() -> None:
    with pytest.raises(ConfigurationError) as excinfo:
        load({"enabled": True, "tiers": {"default": "1/second", "gold": "0/second", "silver": "often"}})
    assert sorted(problem_paths(excinfo)) == ["ratelimit.tiers.gold", "ratelimit.tiers.silver"]


def test_every_tpp_naming_an_unknown_tier_is_reported() -> None:
    with pytest.raises(ConfigurationError) as excinfo:
        load({"enabled": True, "tiers": DEFAULT, "tpps": {"A": "gold", "B": "default", "C": "silver"}})
    assert sorted(problem_paths(excinfo)) == ["ratelimit.tpps.A", "ratelimit.tpps.C"]


def test_a_policy_built_in_python_is_checked_the_same_way() -> None:
    from bankguard.policy_ratelimit import RateLimitPolicy

    with pytest.raises(ConfigurationError) as excinfo:
        RateLimitPolicy(enabled=True, tiers=(("default", "10/minute"),), tpps=(("X", "gold"),))  # type: ignore[arg-type]
    assert problem_paths(excinfo) == ["tpps.X"]
    built = RateLimitPolicy(enabled=True, tiers={"default": "10/minute"})  # type: ignore[arg-type]
    assert windows_of(built.tier_of("anyone").limits) == ((10, 60),)


# -- operation ids: checked against the declared operations when the guard is built ------------


@pytest.mark.parametrize(
    ("section", "path"),
    [
        (
            {"operations": {"GetBalances": "5/minute", "GetBalance": "5/minute"}},
            "ratelimit.operations.GetBalance",
        ),
        (
            {"tiers": {"default": {"limits": "10/minute", "operations": {"CreatePayment": "1/minute"}}}},
            "ratelimit.tiers.default.operations.CreatePayment",
        ),
        (
            {"unattended": {"enabled": True, "operations": ["GetAccounts", "GetBalance"]}},
            "ratelimit.unattended.operations[1]",
        ),
    ],
    ids=["top-level", "tier-level", "unattended"],
)
def test_unknown_operation_ids_are_refused_when_the_guard_is_built(
    section: dict[str, Any], path: str
) -> None:
    policy = load({"enabled": True, "tiers": DEFAULT, **section})  # the policy alone cannot know the ids
    with pytest.raises(ConfigurationError) as excinfo:
        Guard(policy, sink=EventCollector())
    assert problem_paths(excinfo) == [path]
    assert "no declared operation" in str(excinfo.value)


def test_every_unknown_operation_id_is_reported_together() -> None:
    policy = load(
        {
            "enabled": True,
            "tiers": {"default": {"limits": "10/minute", "operations": {"Nope1": "1/minute"}}},
            "operations": {"Nope2": "1/minute"},
            "unattended": {"enabled": True, "operations": ["Nope3"]},
        }
    )
    with pytest.raises(ConfigurationError) as excinfo:
        Guard(policy, sink=EventCollector())
    assert sorted(problem_paths(excinfo)) == [
        "ratelimit.operations.Nope2",
        "ratelimit.tiers.default.operations.Nope1",
        "ratelimit.unattended.operations[0]",
    ]


# -- YAML --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ratelimit_yaml", "path"),
    [
        ("tiers: {default: 10/minute, gold: 10/fortnight}", "ratelimit.tiers.gold"),
        ("tiers: {default: 100}", "ratelimit.tiers.default"),
        ("tiers: {default: 0/minute}", "ratelimit.tiers.default"),
        ("tiers: {default: '1/minute; 2/60 seconds'}", "ratelimit.tiers.default"),
        ("tiers: {gold: 10/minute}", "ratelimit.tiers"),
        ("tiers: {default: 10/minute}\n  tpps: {PSDGB-FCA-1: platinum}", "ratelimit.tpps.PSDGB-FCA-1"),
        ("tiers: {default: 10/minute}\n  tpps: {PSDGB-FCA-1: 3}", "ratelimit.tpps.PSDGB-FCA-1"),
        ("tiers: {default: 10/minute}\n  unattended: {enabled: true}", "ratelimit.unattended.operations"),
        (
            "tiers: {default: 10/minute}\n  preauth: {limits: 5/second, ipv6_prefix: 8}",
            "ratelimit.preauth.ipv6_prefix",
        ),
        (
            "tiers: {default: {limits: 10/minute, operations: {GetBalances: true}}}",
            "ratelimit.tiers.default.operations.GetBalances",
        ),
    ],
)
def test_yaml_errors_name_the_yaml_path(ratelimit_yaml: str, path: str) -> None:
    text = f"ratelimit:\n  enabled: true\n  {ratelimit_yaml}\n"
    with pytest.raises(ConfigurationError) as excinfo:
        Policy.from_yaml_text(text)
    assert problem_paths(excinfo) == [path], excinfo.value.problems


def test_yaml_unknown_operation_id_is_refused_when_the_guard_is_built() -> None:
    policy = Policy.from_yaml_text(
        FULL_YAML.replace("{GetTransactions: 20/minute}", "{GetTransaction: 20/minute}")
    )
    with pytest.raises(ConfigurationError) as excinfo:
        Guard(policy, sink=EventCollector())
    assert problem_paths(excinfo) == ["ratelimit.operations.GetTransaction"]


# -- any text as a limit string ------------------------------------------------------------------

LIMIT_TOKENS = st.sampled_from(
    ["0", "1", "2", "10", "60", "99999999999999999999", "/", " per ", "per", " ", ";", ",", "|", "second",
     "seconds", "minute", "hour", "day", "month", "year", "SECOND", "s", "-", ".", "\n", "\u017f", "\u212a"]
)  # fmt: skip
LIMIT_TEXT = st.one_of(st.text(max_size=60), st.lists(LIMIT_TOKENS, max_size=14).map("".join))


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=LIMIT_TEXT, where=st.sampled_from(["tier", "tier-operation", "operation", "preauth"]))
def test_any_text_as_a_limit_gives_a_policy_or_a_configuration_error(text: str, where: str) -> None:
    section: dict[str, Any] = {"enabled": True, "tiers": {"default": "10/minute"}}
    paths = {
        "tier": "ratelimit.tiers.default",
        "tier-operation": "ratelimit.tiers.default.operations.GetBalances",
        "operation": "ratelimit.operations.GetBalances",
        "preauth": "ratelimit.preauth.limits",
    }
    if where == "tier":
        section["tiers"] = {"default": text}
    elif where == "tier-operation":
        section["tiers"] = {"default": {"limits": "10/minute", "operations": {"GetBalances": text}}}
    elif where == "operation":
        section["operations"] = {"GetBalances": text}
    else:
        section["preauth"] = {"limits": text}
    try:
        rl = load(section).ratelimit
    except ConfigurationError as exc:
        refused = [p.path for p in exc.problems]
    else:
        refused = []
    if refused:
        assert refused == [paths[where]]
        return
    tier = dict(rl.tiers)["default"]
    stored = {
        "tier": tier.limits,
        "tier-operation": dict(tier.operations).get("GetBalances"),
        "operation": dict(rl.operations).get("GetBalances"),
        "preauth": rl.preauth.limits,
    }[where]
    assert stored is not None
    windows = windows_of(stored)
    assert 1 <= len(windows) <= MAX_WINDOWS
    assert len({seconds for _, seconds in windows}) == len(windows)
    for amount, seconds in windows:
        assert amount >= 1
        assert 1 <= seconds <= MAX_WINDOW_SECONDS
    Guard(load(section), sink=EventCollector())  # an accepted limit also builds a guard
