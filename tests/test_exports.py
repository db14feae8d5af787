"""The public surface of the ``bankguard`` package is exactly its sorted ``__all__``."""

from __future__ import annotations

import types

import pytest

import bankguard


def public_attributes() -> set[str]:
    """Names a user can import from ``bankguard``: no underscore, no submodule, no __future__ flag."""
    return {
        name
        for name, value in vars(bankguard).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and type(value).__module__ != "__future__"
    }


def test_all_is_sorted():
    assert bankguard.__all__ == sorted(bankguard.__all__)


def test_all_has_no_duplicates():
    assert len(bankguard.__all__) == len(set(bankguard.__all__))


def test_all_equals_the_public_attributes():
    assert set(bankguard.__all__) - {"__version__"} == public_attributes()


@pytest.mark.parametrize("name", bankguard.__all__)
def test_every_name_in_all_resolves(name):
    assert getattr(bankguard, name) is not None


def test_star_import_gives_exactly_all():
    namespace: dict[str, object] = {}
    exec("from bankguard import *", namespace)  # noqa: S102 - fixed source text
    assert set(namespace) - {"__builtins__"} == set(bankguard.__all__)


def test_version_is_exported():
    assert isinstance(bankguard.__version__, str)
    assert bankguard.__version__
