"""vault.audit.checkpoint: Ed25519 (audit key) over canonical {seq, hash, ts}; raise, never bool."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import given
from hypothesis import strategies as st

from vault.audit.chain import GENESIS, Head
from vault.audit.checkpoint import (
    CHECKPOINT_MEMBERS,
    Checkpoint,
    checkpoint_from_dict,
    make_checkpoint,
    signed_bytes,
    verify_checkpoint,
)
from vault.crypto.b64 import b64url_decode, b64url_encode
from vault.crypto.keys import KeyPair, generate
from vault.errors import CheckpointSignatureInvalid

TS = "2026-11-27T17:00:00.123456Z"
HEAD = Head(1000, "3f" * 32)

# Module-level keys: hypothesis tests must not depend on function-scoped fixtures.
AUDIT = generate("audit")
OTHER_AUDIT = generate("audit")
TOKEN = generate("token")


def lookup_for(*pairs: KeyPair):
    keys: dict[str, Ed25519PublicKey] = {pair.kid: pair.public_key for pair in pairs}
    return keys.get


def invalid(checkpoint: Checkpoint, lookup) -> CheckpointSignatureInvalid:
    with pytest.raises(CheckpointSignatureInvalid) as info:
        verify_checkpoint(checkpoint, lookup)
    assert type(info.value) is CheckpointSignatureInvalid
    return info.value


# --- make / verify -----------------------------------------------------------------------------


def test_round_trip():
    checkpoint = make_checkpoint(HEAD, TS, AUDIT)
    assert (checkpoint.seq, checkpoint.hash, checkpoint.ts, checkpoint.kid) == (
        HEAD.seq,
        HEAD.hash,
        TS,
        AUDIT.kid,
    )
    assert verify_checkpoint(checkpoint, lookup_for(AUDIT)) is checkpoint


def test_signed_bytes_are_the_spec_canonical_json():
    expected = json.dumps(
        {"seq": HEAD.seq, "hash": HEAD.hash, "ts": TS},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode("utf-8")
    assert (
        expected == b'{"hash":"' + HEAD.hash.encode() + b'","seq":1000,"ts":"' + TS.encode() + b'"}'
    )
    assert signed_bytes(HEAD.seq, HEAD.hash, TS) == expected
    checkpoint = make_checkpoint(HEAD, TS, AUDIT)
    assert checkpoint.signed_bytes() == expected
    # An independent verifier needs only the public key, base64url and those bytes.
    signature = b64url_decode(checkpoint.sig)
    assert len(signature) == 64
    AUDIT.public_key.verify(signature, expected)  # raises if not


def test_sig_is_unpadded_base64url():
    checkpoint = make_checkpoint(HEAD, TS, AUDIT)
    assert len(checkpoint.sig) == 86
    assert "=" not in checkpoint.sig
    assert b64url_encode(b64url_decode(checkpoint.sig)) == checkpoint.sig


def test_checkpoint_of_the_empty_log():
    checkpoint = make_checkpoint(GENESIS, TS, AUDIT)
    assert (checkpoint.seq, checkpoint.hash) == (0, "0" * 64)
    verify_checkpoint(checkpoint, lookup_for(AUDIT))


def test_any_known_audit_key_verifies():
    """A keyring: checkpoints signed by a retired key still verify while it is published."""
    old = make_checkpoint(HEAD, TS, OTHER_AUDIT)
    new = make_checkpoint(HEAD, TS, AUDIT)
    lookup = lookup_for(OTHER_AUDIT, AUDIT)
    verify_checkpoint(old, lookup)
    verify_checkpoint(new, lookup)


# --- refusals ----------------------------------------------------------------------------------


def test_unknown_kid():
    checkpoint = make_checkpoint(HEAD, TS, OTHER_AUDIT)
    exc = invalid(checkpoint, lookup_for(AUDIT))
    assert exc.seq == HEAD.seq
    assert "unknown audit key" in exc.reason


def test_no_keys_at_all():
    invalid(make_checkpoint(HEAD, TS, AUDIT), lookup_for())


def test_token_key_is_not_an_audit_key():
    checkpoint = make_checkpoint(HEAD, TS, TOKEN)
    exc = invalid(checkpoint, lookup_for(AUDIT))
    assert "unknown audit key" in exc.reason


def test_wrong_key_under_the_right_kid():
    """Signed by another key but claiming our kid: the signature, not the kid, decides."""
    forged = dataclasses.replace(make_checkpoint(HEAD, TS, OTHER_AUDIT), kid=AUDIT.kid)
    exc = invalid(forged, lookup_for(AUDIT, OTHER_AUDIT))
    assert exc.reason == "signature does not verify"


def test_kid_swapped_to_another_known_key():
    forged = dataclasses.replace(make_checkpoint(HEAD, TS, AUDIT), kid=OTHER_AUDIT.kid)
    assert invalid(forged, lookup_for(AUDIT, OTHER_AUDIT)).reason == "signature does not verify"


def _flip_char(text: str, index: int) -> str:
    replacement = "A" if text[index] != "A" else "B"
    return text[:index] + replacement + text[index + 1 :]


TAMPERS: dict[str, dict[str, Any]] = {
    "seq+1": {"seq": HEAD.seq + 1},
    "seq-1": {"seq": HEAD.seq - 1},
    "seq-0": {"seq": 0},
    "hash": {"hash": "40" * 32},
    "hash-one-digit": {"hash": "3f" * 31 + "3e"},
    "ts": {"ts": "2026-11-27T17:00:00.123457Z"},
    "ts-respelled": {"ts": "2026-11-27T17:00:00.123456+00:00"},
    "sig-empty": {"sig": ""},
    "sig-garbage": {"sig": "!!!not base64!!!"},
    "sig-padded": {"sig": None},  # filled in below: the right signature with "=" padding
    "sig-truncated": {"sig": None},
    "sig-flipped-first": {"sig": None},
    "sig-flipped-middle": {"sig": None},
    "sig-other-message": {"sig": None},
    "sig-standard-alphabet": {"sig": None},
}


def _tampered(name: str) -> Checkpoint:
    good = make_checkpoint(HEAD, TS, AUDIT)
    changes = dict(TAMPERS[name])
    sig = good.sig
    if name == "sig-padded":
        changes["sig"] = sig + "=="
    elif name == "sig-truncated":
        changes["sig"] = sig[:-2]
    elif name == "sig-flipped-first":
        changes["sig"] = _flip_char(sig, 0)
    elif name == "sig-flipped-middle":
        changes["sig"] = _flip_char(sig, 40)
    elif name == "sig-other-message":
        changes["sig"] = make_checkpoint(Head(HEAD.seq + 1, HEAD.hash), TS, AUDIT).sig
    elif name == "sig-standard-alphabet":
        changes["sig"] = sig.replace("-", "+").replace("_", "/")
        if changes["sig"] == sig:  # this signature happens to use neither character
            changes["sig"] = sig + "+"
    return dataclasses.replace(good, **changes)


@pytest.mark.parametrize("name", TAMPERS.keys())
def test_tampered_checkpoint_is_refused(name):
    forged = _tampered(name)
    exc = invalid(forged, lookup_for(AUDIT))
    assert exc.seq == forged.seq
    assert exc.reason == "signature does not verify"
    assert exc.code == "checkpoint_signature_invalid"


@given(
    seq=st.integers(min_value=0, max_value=2**53 - 1),
    digest=st.binary(min_size=32, max_size=32),
    position=st.integers(min_value=0, max_value=85),
)
def test_round_trip_and_any_sig_character_change(seq, digest, position):
    checkpoint = make_checkpoint(Head(seq, digest.hex()), TS, AUDIT)
    as_json = json.loads(json.dumps(checkpoint.to_dict()))
    again = checkpoint_from_dict(as_json)
    assert again == checkpoint
    assert verify_checkpoint(again, lookup_for(AUDIT)) == checkpoint
    forged = dataclasses.replace(checkpoint, sig=_flip_char(checkpoint.sig, position))
    with pytest.raises(CheckpointSignatureInvalid):
        verify_checkpoint(forged, lookup_for(AUDIT))


# --- checkpoint_from_dict ----------------------------------------------------------------------


def _good() -> dict[str, Any]:
    return make_checkpoint(HEAD, TS, AUDIT).to_dict()


def test_to_dict_members():
    assert set(_good()) == CHECKPOINT_MEMBERS == {"seq", "hash", "ts", "kid", "sig"}


def test_from_dict_accepts_kind():
    checkpoint = checkpoint_from_dict({**_good(), "kind": "checkpoint"})
    assert checkpoint == make_checkpoint(HEAD, TS, AUDIT)
    verify_checkpoint(checkpoint, lookup_for(AUDIT))


def _with(**changes: Any) -> dict[str, Any]:
    return {**_good(), **changes}


def _without(name: str) -> dict[str, Any]:
    obj = _good()
    del obj[name]
    return obj


BAD_CHECKPOINT_DICTS: dict[str, Any] = {
    "list": [_good()],
    "string": "checkpoint",
    "null": None,
    "missing-sig": _without("sig"),
    "missing-kid": _without("kid"),
    "missing-seq": _without("seq"),
    "extra-member": _with(extra=1),
    "entry-member": _with(prev="0" * 64),
    "seq-negative": _with(seq=-1),
    "seq-bool": _with(seq=False),
    "seq-string": _with(seq="1000"),
    "seq-float": _with(seq=1000.0),
    "seq-null": _with(seq=None),
    "hash-uppercase": _with(hash="3F" * 32),
    "hash-short": _with(hash="3f" * 31),
    "hash-non-hex": _with(hash="zz" * 32),
    "hash-int": _with(hash=0),
    "ts-int": _with(ts=1),
    "kid-null": _with(kid=None),
    "sig-bytes-list": _with(sig=[1, 2]),
}


@pytest.mark.parametrize("obj", BAD_CHECKPOINT_DICTS.values(), ids=BAD_CHECKPOINT_DICTS.keys())
def test_from_dict_refuses_bad_shapes(obj):
    with pytest.raises(ValueError):  # noqa: PT011 - the documented contract is ValueError
        checkpoint_from_dict(obj)
