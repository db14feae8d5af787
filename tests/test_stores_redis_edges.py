"""Redis storage URLs refused when the guard is built, before any connection: the message names
``storage.uri`` and never repeats a password (CFG-08; ARCHITECTURE property 6)."""

from __future__ import annotations

import pytest

from bankguard import Guard, Policy
from bankguard.errors import ConfigurationError


def problem(uri: str) -> str:
    with pytest.raises(ConfigurationError) as info:
        Guard(Policy.from_dict({"storage": {"uri": uri}}))
    (found,) = info.value.problems
    assert found.path == "storage.uri"
    return found.message


@pytest.mark.parametrize("path", ["/mymaster/x", "/mymaster/1/2"])
def test_sentinel_path_is_service_then_db_number(path: str) -> None:
    message = problem(f"redis+sentinel://:hunter2@sentinel.bank.internal:26379{path}")
    assert message.endswith("the path is /service or /service/db, db a number")
    assert "hunter2" not in message
    assert "***" in message


@pytest.mark.parametrize("uri", ["redis://[::1:6379/0", "redis://bank:hunter2@[::1:6379/0"])
def test_unparsable_url_is_not_repeated(uri: str) -> None:
    message = problem(uri)
    assert message == "invalid Redis URL <unparsable URL>: Invalid IPv6 URL"
