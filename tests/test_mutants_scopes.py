"""Scope requirements: behaviours that mutation testing (scripts/mutation.sh) found unpinned.

* ``ScopeRequirement.merge`` keeps OpenAPI security alternatives (``one_of``) and the
  "a token is needed" flag when only one side has them (OWASP-17: merging declarations never
  weakens either of them);
* ``requirement_of`` trusts only a real :class:`ScopeRequirement` on the attribute;
* ``require_scopes`` on a view function returns a wrapper that refuses to run outside bankguard
  (fail closed), while on an ASGI/WSGI application callable it only marks it, so the server can
  still call the application for lifespan events; a decorated Flask blueprint refuses its views in
  an application bankguard does not protect; a class stays the class;
* the messages of the configuration errors name the offending argument.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from flask import Blueprint, Flask
from flask.views import MethodView

from bankguard import NotProtectedError, ScopeRequirement, require_scopes
from bankguard.scopes import ATTRIBUTE, requirement_of

R = ScopeRequirement
F = frozenset
ALTERNATIVES = (F({"accounts", "balances"}), F({"payments", "payments:write"}))


# -- merge keeps what either side requires (OWASP-17) -------------------------------------------


@pytest.mark.parametrize(
    ("left", "right", "merged"),
    [
        pytest.param(
            R(F({"x"})), R(one_of=ALTERNATIVES), R(F({"x"}), one_of=ALTERNATIVES), id="one-of-right"
        ),
        pytest.param(R(one_of=ALTERNATIVES), R(F({"x"})), R(F({"x"}), one_of=ALTERNATIVES), id="one-of-left"),
        pytest.param(
            R(one_of=(F({"a"}), F({"b"}))),
            R(one_of=(F({"c"}),)),
            R(one_of=(F({"a", "c"}), F({"b", "c"}))),
            id="one-of-both",
        ),
        pytest.param(R(), R(authenticated=True), R(authenticated=True), id="authenticated-right"),
        pytest.param(
            R(authenticated=True), R(F({"a"})), R(F({"a"}), authenticated=True), id="authenticated-left"
        ),
    ],
)
def test_OWASP_17_merge_keeps_alternatives_and_authentication(
    left: ScopeRequirement, right: ScopeRequirement, merged: ScopeRequirement
) -> None:
    assert left.merge(right) == merged


def test_OWASP_17_merged_alternatives_are_still_enforced() -> None:
    merged = R(F({"x"})).merge(R(one_of=ALTERNATIVES))
    assert merged.unmet(F({"x"})) == ("accounts", "balances", "x")  # a tie: the first alternative
    assert merged.unmet(F({"x", "payments"})) == ("payments", "payments:write", "x")
    assert merged.unmet(F({"x", "accounts", "balances"})) == ()
    assert merged.unmet(F({"accounts", "balances"})) == ("x",)
    assert merged.unmet(F({"x", "payments", "payments:write"})) == ()


def test_AUTH_01_merged_authentication_only_requirement_still_needs_a_token() -> None:
    assert bool(R().merge(R(authenticated=True)))


# -- requirement_of -----------------------------------------------------------------------------


class _Anything:
    """An object answering every attribute (a proxy, a mock): its answer is no requirement."""

    def __getattr__(self, name: str) -> Any:
        return "accounts"


def test_requirement_of_ignores_an_attribute_that_is_not_a_requirement() -> None:
    assert requirement_of(_Anything()) is None

    def view() -> None:
        return None

    setattr(view, ATTRIBUTE, {"all_of": ["accounts"]})
    assert requirement_of(view) is None


# -- what the decorator returns ------------------------------------------------------------------


def test_decorated_view_refuses_to_run_outside_bankguard() -> None:
    calls: list[str] = []

    @require_scopes("accounts")
    def view() -> str:
        calls.append("view")
        return "ok"

    message = r"^a require_scopes endpoint ran outside bankguard; wrap the app with protect\(\)$"
    with pytest.raises(NotProtectedError, match=message):
        view()
    assert calls == []


def test_decorated_view_whose_signature_cannot_be_read_is_still_guarded() -> None:
    def view() -> str:
        return "ok"

    view.__signature__ = object()  # type: ignore[attr-defined]  # inspect.signature raises TypeError
    guarded = require_scopes("accounts")(view)
    assert guarded is not view
    with pytest.raises(NotProtectedError):
        guarded()


def test_decorated_asgi_application_still_serves_lifespan_events() -> None:
    """An ASGI application callable is marked, not wrapped: the server calls it for lifespan events,
    outside any request, and the guard enforces the requirement on HTTP requests."""
    calls: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any, *, label: str = "api") -> None:
        calls.append(scope["type"])  # an optional fourth parameter keeps it an ASGI callable

    decorated = require_scopes("accounts")(app)
    assert decorated is app
    assert requirement_of(app) == R(F({"accounts"}))

    async def receive() -> dict[str, Any]:
        return {"type": "lifespan.startup"}

    async def send(message: dict[str, Any]) -> None:
        return None

    asyncio.run(decorated({"type": "lifespan"}, receive, send))
    assert calls == ["lifespan"]


def test_decorated_wsgi_application_is_marked_not_wrapped() -> None:
    def app(environ: dict[str, Any], start_response: Any, exc_info: Any = None) -> list[bytes]:
        start_response("204 No Content", [])
        return []

    assert require_scopes("accounts")(app) is app
    assert requirement_of(app) == R(F({"accounts"}))
    assert app({}, lambda status, headers: None) == []  # callable as before, e.g. by a health probe


def test_decorated_class_stays_the_class() -> None:
    class Accounts(MethodView):
        def get(self) -> str:
            return "ok"

    decorated = require_scopes("accounts")(Accounts)
    assert decorated is Accounts
    assert requirement_of(Accounts) == R(F({"accounts"}))
    assert callable(Accounts.as_view("accounts"))


def test_decorated_blueprint_refuses_its_views_in_an_unprotected_app() -> None:
    calls: list[str] = []
    blueprint = Blueprint("aisp", __name__)

    @blueprint.get("/accounts")
    def accounts() -> str:
        calls.append("accounts")
        return "ok"

    require_scopes("accounts")(blueprint)
    app = Flask(__name__)
    app.testing = True  # exceptions reach the test
    app.register_blueprint(blueprint)
    with pytest.raises(NotProtectedError):
        app.test_client().get("/accounts")
    assert calls == []
    assert requirement_of(blueprint) == R(F({"accounts"}))


def test_decorated_router_with_a_mount_marks_its_api_routes() -> None:
    router = APIRouter()

    @router.get("/accounts")
    async def accounts() -> dict[str, str]:
        return {}

    router.mount("/static", FastAPI())  # a route without an endpoint
    assert require_scopes("accounts")(router) is router
    assert requirement_of(accounts) == R(F({"accounts"}))
    assert len(router.dependencies) == 1


# -- configuration errors name the argument ------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        pytest.param(("a b",), {}, r"^'a b' is not a valid scope \(RFC 6749", id="scope"),
        pytest.param(
            ("a",), {"any_of": ["p q"]}, r"^'p q' is not a valid any_of scope \(RFC 6749", id="any-of"
        ),
        pytest.param(
            (), {"any_of": "payments"}, r"^any_of takes a list of scopes, not a string$", id="any-of-str"
        ),
        pytest.param((), {}, r"^require_scopes\(\) needs at least one scope$", id="nothing"),
    ],
)
def test_require_scopes_errors_name_the_argument(
    args: tuple[str, ...], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        require_scopes(*args, **kwargs)
