"""Secrets pasted into caller-supplied text are recognized and replaced, whole."""

from __future__ import annotations

import re
import secrets

import hypothesis
import pytest
from hypothesis import strategies as st

from vault.ops.credentials import new_credential
from vault.redact import PLACEHOLDER, _spans, looks_secret, redact_secrets

JWT = (
    "eyJhbGciOiJFZERTQSIsInR5cCI6ImF0K2p3dCJ9"
    ".eyJzdWIiOiJ1LTEiLCJleHAiOjE3OTU4MDU1ODV9"
    ".PqM2PtHr2WXg4_3Up6dynTIiKLAaER3Xy-psZlt9IXwRRG20TetilSKuBukIm6yimLn12hjiuJc9YHzTHNHMDw"
)


@pytest.mark.parametrize(
    "secret",
    [
        new_credential(),
        "DV_" + new_credential()[3:],
        "dv-" + new_credential()[3:],
        JWT,
        JWT.rsplit(".", 1)[0],
        "sk-" + secrets.token_hex(16),
    ],
    ids=[
        "credential",
        "credential-retyped-upper",
        "credential-retyped-dash",
        "jwt",
        "unsigned-jwt",
        "sk-key",
    ],
)
def test_secret_is_recognized_and_replaced_whole(secret):
    text = f"unknown scope: chat {secret} models:read"
    assert looks_secret(text)
    redacted = redact_secrets(text)
    assert redacted == f"unknown scope: chat {PLACEHOLDER} models:read"
    # no fragment of the secret's random part survives
    assert secret[-12:] not in redacted


@pytest.mark.parametrize(
    "text",
    [
        "TICKET-42 user asked for help",
        "dv_short",
        "sk-abc",
        "eyJ alone",
        "chats:read models:read",
        "rdv-meeting-with-the-customer-about-pricing",  # "dv-" inside a word starts nothing
    ],
)
def test_ordinary_text_is_left_alone(text):
    assert not looks_secret(text)
    assert redact_secrets(text) == text


# --- the access log's paths (vault.api.access_log) ----------------------------------------------


def test_a_path_escaped_once_or_more_is_redacted_in_the_access_log() -> None:
    credential = new_credential()
    once = credential.replace("_", "%5F", 1)
    twice = once.replace("%", "%25")
    for path in (
        f"/v1/subjects/{credential}",
        f"/v1/audit/entries?jti={once}",
        f"/v1/audit/entries?jti={twice}",
        f"/v1/audit/entries?jti={twice.replace('%', '%25')}",
    ):
        shown = redact_secrets(path)
        assert credential[3:] not in shown, path
        assert PLACEHOLDER in shown, shown
    # a secret as it came beside one escaped: both go, as the unescaped text
    mixed = redact_secrets(f"/v1/subjects/x?a={credential}&b={once}&c={twice}")
    assert credential[3:] not in mixed
    assert mixed.count(PLACEHOLDER) == 3, mixed
    for plain in ("/healthz?q=plain", "/v1/subjects/u%C3%A9-1", "/a%25b", "/%zz"):
        assert redact_secrets(plain) is plain  # nothing secret: the line stays as it came
    endless = "/x?jti=%" + "25" * 40 + "41"  # unescaped 41 times before it settles
    assert redact_secrets(endless) == f"{PLACEHOLDER} (escaped too often)"


@pytest.mark.parametrize(
    "hidden",
    [
        JWT.replace(".", "%2E"),
        JWT.replace(".", "%2e"),
        JWT.replace(".", "%252E"),
        new_credential().replace("_", "%5F", 1),
        "sk%2D" + secrets.token_hex(16),
    ],
    ids=["jwt-dots-escaped", "jwt-dots-escaped-lowercase", "jwt-escaped-twice", "dv", "sk"],
)
def test_a_secret_behind_percent_escapes_is_recognized_and_replaced(hidden: str) -> None:
    text = f"TICKET-9 pasted {hidden} here"
    assert looks_secret(text)
    redacted = redact_secrets(text)
    assert redacted == f"TICKET-9 pasted {PLACEHOLDER} here"
    assert hidden[-12:] not in redacted


def test_a_plain_secret_that_unescaping_would_break_up_goes_whole() -> None:
    """``%2e`` followed by a JWT: unescaped, ``%2e`` and the JWT's first ``e`` become ``.``,
    and what is left no longer looks like a JWT; it is taken before unescaping."""
    text = "/x?t=%2" + JWT
    assert looks_secret(text)
    redacted = redact_secrets(text)
    assert JWT[-12:] not in redacted, redacted
    assert JWT[3:20] not in redacted, redacted
    assert PLACEHOLDER in redacted


@pytest.mark.parametrize("text", ["/a%25b", "100%", "%zz", "caf%C3%A9 chats:read"])
def test_escaped_ordinary_text_is_left_as_it_came(text: str) -> None:
    assert not looks_secret(text)
    assert redact_secrets(text) is text


# The expression ``vault.redact`` documents, run by ``re``: the reference ``_spans`` must equal.
REFERENCE = re.compile(
    r"dv_[A-Za-z0-9_-]{20,}"
    r"|(?<![A-Za-z0-9])(?i:dv)[_-][A-Za-z0-9_-]{20,}"
    r"|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}(?:\.[A-Za-z0-9_-]*)?"
    r"|sk-[A-Za-z0-9]{16,}"
)
PIECES = ["eyJ", "dv_", "DV-", "dv-", "sk-", ".", "a", "Z9", "_", "-", "%2E", " ", "=", "x" * 9]


@hypothesis.settings(max_examples=3000)
@hypothesis.given(st.lists(st.sampled_from(PIECES), max_size=40).map("".join))
def test_spans_are_the_reference_expressions_matches(text: str) -> None:
    assert _spans(text) == [m.span() for m in REFERENCE.finditer(text)]
    if "%" not in text:
        assert redact_secrets(text) == REFERENCE.sub(PLACEHOLDER, text)


@hypothesis.given(st.text(alphabet="eyJdvsk_-.aZ9 ", max_size=80))
def test_spans_are_the_reference_expressions_matches_on_any_text(text: str) -> None:
    assert _spans(text) == [m.span() for m in REFERENCE.finditer(text)]


@pytest.mark.parametrize(
    "text",
    [
        "eyJ" * 700,  # the reference's worst case: every start scans to the end
        "eyJ" * 300 + "." + "a" * 8,
        "dv_" * 700,
        "x" + "eyJ" * 10 + ".abcdefgh.ij" + "dv-" + "q" * 30,
        "DV_" + "A" * 25 + " sk-" + "b" * 16 + "-" + "eyJ" + "c" * 8 + ".d" * 9,
    ],
)
def test_spans_on_long_and_mixed_runs(text: str) -> None:
    assert _spans(text) == [m.span() for m in REFERENCE.finditer(text)]
