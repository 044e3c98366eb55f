"""Secrets pasted into caller-supplied text are recognized and replaced, whole."""

from __future__ import annotations

import secrets

import pytest

from vault.ops.credentials import new_credential
from vault.redact import PLACEHOLDER, looks_secret, redact_secrets

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
