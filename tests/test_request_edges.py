"""The sans-IO header view (``bankguard.request.Headers``): field lines kept in order, names
compared case-insensitively (RFC 9110 §5.1), repeated lines counted, never merged (RFC 9110 §5.3)."""

from __future__ import annotations

from bankguard.request import Headers


def test_headers_keep_every_field_line_in_order() -> None:
    headers = Headers([("Accept", "application/json"), ("X-Ids", "1"), ("x-ids", "2"), ("DPoP", "p")])
    assert len(headers) == 4
    assert list(headers) == [("accept", "application/json"), ("x-ids", "1"), ("x-ids", "2"), ("dpop", "p")]
    assert sorted(headers.names()) == ["accept", "dpop", "x-ids"]


def test_repeated_lines_are_counted_not_merged() -> None:
    headers = Headers([("Authorization", "Bearer a"), ("authorization", "DPoP b")])
    assert headers.count("authorization") == 2
    assert headers.count("dpop") == 0
    assert headers.get_all("authorization") == ["Bearer a", "DPoP b"]
    assert headers.get("authorization") == "Bearer a"
    assert headers.only("authorization") is None  # ambiguous: two lines
    assert headers.get("dpop", "absent") == "absent"
    assert "authorization" in headers
    assert "Authorization" not in headers  # lookups take lower-case names


def test_empty_headers() -> None:
    headers = Headers()
    assert len(headers) == 0
    assert list(headers) == []
    assert list(headers.names()) == []
    assert headers.only("x") is None
