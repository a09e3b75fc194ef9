"""Banner tokens: the HMAC the README documents, accepted for 10 minutes, nothing else."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from recovery.domain import embed_token

SECRET = "s" * 32
T = 1_793_610_000


def test_the_readme_recipe_makes_a_token_we_accept() -> None:
    # README, "In-app notice": what a business's backend computes, written out by hand.
    sig = hmac.new(SECRET.encode(), f"v1\ncus_Ab12\n{T}".encode(), hashlib.sha256).hexdigest()
    token = f"v1.cus_Ab12.{T}.{sig}"
    assert token == embed_token.mint(SECRET, "cus_Ab12", T)
    assert embed_token.verify(SECRET, token, T) == "cus_Ab12"


@pytest.mark.parametrize(
    ("offset", "accepted"),
    [(-61, False), (-60, True), (0, True), (599, True), (600, False), (86_400, False)],
)
def test_a_token_lives_ten_minutes(offset: int, accepted: bool) -> None:
    token = embed_token.mint(SECRET, "cus_1", T)
    assert (embed_token.verify(SECRET, token, T + offset) == "cus_1") is accepted


@pytest.mark.parametrize(
    "token",
    [
        embed_token.mint("another-secret-of-32-characters!", "cus_1", T),
        embed_token.mint(SECRET, "cus_1", T).replace("cus_1", "cus_2"),  # signed for another
        embed_token.mint(SECRET, "cus_1", T).upper(),
        f"v2.cus_1.{T}." + "0" * 64,
        "v1.cus_1",
        "",
        "v1.cus_1.1e9." + "0" * 64,
    ],
)
def test_anything_else_is_refused(token: str) -> None:
    assert embed_token.verify(SECRET, token, T) is None


def test_no_secret_accepts_nothing() -> None:
    assert embed_token.verify("", embed_token.mint("", "cus_1", T), T) is None
