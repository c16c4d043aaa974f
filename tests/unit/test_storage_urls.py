"""Storage URLs with a password: hidden in what is shown, removed from what is stored."""

from __future__ import annotations

import pytest

from autotask.errors import StorageError
from autotask.store.db import parse_url, redact, safe_url, without_password

SECRET = "pa55-word"


@pytest.mark.parametrize(
    ("url", "shown", "stored"),
    [
        (
            f"postgresql+psycopg://me:{SECRET}@db:5432/s",
            "postgresql+psycopg://me:***@db:5432/s",
            "postgresql+psycopg://me@db:5432/s",
        ),
        (f"me:{SECRET}@db/s", "me:***@db/s", "me@db/s"),  # no scheme: not a URL
        (
            f"postgresql://me:{SECRET}@db:54x2/s",
            "postgresql://me:***@db:54x2/s",
            "postgresql://me@db:54x2/s",
        ),
        ("postgresql://me@db:5432/s", "postgresql://me@db:5432/s", "postgresql://me@db:5432/s"),
        ("sqlite:///file:x.db?mode=ro&uri=true",) * 3,
    ],
)
def test_the_password_is_hidden_and_not_stored(url: str, shown: str, stored: str) -> None:
    assert safe_url(url) == shown
    assert without_password(url) == stored
    assert SECRET not in redact(f"cannot connect to {url!r}: refused", url)


def test_other_urls_in_a_message_lose_their_password() -> None:
    assert (
        redact("x at mysql://a:b@c/d failed", "sqlite:///s.db") == "x at mysql://a:***@c/d failed"
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://me@db:54x2/s", "the port must be a number from 1 to 65535"),
        ("postgresql://me@db:70000/s", "the port must be a number from 1 to 65535"),
        (f"me:{SECRET}@db/s", "not a database URL: 'me:***@db/s'"),
    ],
)
def test_bad_urls_are_one_line_errors(url: str, message: str) -> None:
    with pytest.raises(StorageError) as info:
        parse_url(url)
    assert message in str(info.value) and SECRET not in str(info.value)
