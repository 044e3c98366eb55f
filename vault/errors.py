"""One error tree for the whole vault.

Every leaf carries a stable ``code`` (the ``error`` member of an HTTP error body) and a human
``description``. Nothing here knows about HTTP: the status code of each leaf is chosen at the
edge (``vault.api.errors`` and the middleware).
"""

from __future__ import annotations


class VaultError(Exception):
    """Base of every error the vault raises on purpose."""

    code = "server_error"

    def __init__(self, description: str = "") -> None:
        super().__init__(description or self.code)
        self.description = description or self.code


# --- configuration -----------------------------------------------------------------------------


class ConfigError(VaultError):
    code = "config_error"


class MasterKeyError(ConfigError):
    """The master key is missing, malformed, or does not open this vault's keys."""

    code = "master_key_error"


class NotInitialized(ConfigError):
    code = "not_initialized"


class AlreadyInitialized(VaultError):
    code = "already_initialized"


# --- requests ----------------------------------------------------------------------------------


class InvalidRequest(VaultError):
    code = "invalid_request"


class InvalidScope(InvalidRequest):
    code = "invalid_scope"


class InvalidTTL(InvalidRequest):
    code = "invalid_ttl"


class RequestTooLarge(InvalidRequest):
    code = "request_too_large"


class Conflict(VaultError):
    code = "conflict"


class AmbiguousSubject(Conflict):
    """A name that is one subject's id and, case aside, another's email (written before such
    pairs were refused): it names neither, rather than perhaps the wrong one."""

    code = "ambiguous_subject"


class NotFound(VaultError):
    code = "not_found"


class UnknownSubject(NotFound):
    code = "unknown_subject"


# --- authentication and authorization ----------------------------------------------------------


class Unauthenticated(VaultError):
    """No credential, or one that is unknown, disabled or malformed. Never says which."""

    code = "unauthorized"


class Forbidden(VaultError):
    """The caller is known but may not do this."""

    code = "forbidden"


class SubjectNotAllowed(Forbidden):
    code = "subject_not_allowed"


class SubjectInactive(Forbidden):
    code = "subject_inactive"


class ScopeNotAllowed(Forbidden):
    code = "scope_not_allowed"


# --- tokens ------------------------------------------------------------------------------------


class TokenError(VaultError):
    """A delegation token was refused. ``signature_valid`` says whether it was really ours."""

    code = "invalid_token"
    signature_valid = False


class MalformedToken(TokenError):
    code = "malformed_token"


class TokenTooLarge(TokenError):
    code = "token_too_large"


class DisallowedAlgorithm(TokenError):
    code = "disallowed_algorithm"


class WrongTokenType(TokenError):
    code = "wrong_token_type"


class UnknownKey(TokenError):
    code = "unknown_key"


class BadSignature(TokenError):
    code = "bad_signature"


class SignedTokenError(TokenError):
    """Refusals of a token whose signature verified: these are worth auditing."""

    signature_valid = True


class MissingClaim(SignedTokenError):
    code = "missing_claim"


class InvalidClaim(SignedTokenError):
    code = "invalid_claim"


class WrongIssuer(SignedTokenError):
    code = "wrong_issuer"


class WrongAudience(SignedTokenError):
    code = "wrong_audience"


class ExpiredToken(SignedTokenError):
    code = "expired_token"


class TokenNotYetValid(SignedTokenError):
    code = "token_not_yet_valid"


class RevokedToken(SignedTokenError):
    code = "revoked_token"


class UnknownToken(SignedTokenError):
    """Signed by a key of the vault, but never issued as it is: only a holder of a signing key
    (a leaked one, say) could have made it, so the audit says so rather than "revoked"."""

    code = "unknown_token"


class PolicyChanged(SignedTokenError):
    """The subject or the delegator's policy no longer allows what the token carries."""

    code = "policy_changed"


# --- audit -------------------------------------------------------------------------------------


class AuditError(VaultError):
    code = "audit_error"


class ChainBroken(AuditError):
    """The chain does not hold at ``seq``."""

    code = "chain_broken"

    def __init__(self, seq: int, reason: str) -> None:
        super().__init__(f"seq {seq}: {reason}")
        self.seq = seq
        self.reason = reason


class ForeignEntry(ChainBroken):
    """An entry the vault did not write, in a chain that holds: its ``data`` is not an object's
    canonical JSON, the only thing the vault writes there. Past the newest signed checkpoint
    nothing else tells it from the vault's own; signed over, it would be vouched for as such."""


class CheckpointMismatch(ChainBroken):
    """A signed checkpoint and the log disagree at ``seq``."""

    code = "checkpoint_mismatch"


class CheckpointSignatureInvalid(AuditError):
    code = "checkpoint_signature_invalid"

    def __init__(self, seq: int, reason: str) -> None:
        super().__init__(f"checkpoint at seq {seq}: {reason}")
        self.seq = seq
        self.reason = reason


class MalformedExport(AuditError):
    code = "malformed_export"

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason


class CorruptEntry(AuditError):
    """A stored entry cannot be read as an entry at all (a value of the wrong type)."""

    code = "corrupt_entry"

    def __init__(self, seq: object, reason: str) -> None:
        super().__init__(f"entry seq {seq}: {reason}")
        self.seq = seq
        self.reason = reason


# --- availability ------------------------------------------------------------------------------


class Unavailable(VaultError):
    """A dependency (database, audit append) failed: fail closed."""

    code = "unavailable"


class AuditUnavailable(Unavailable):
    code = "audit_unavailable"


class LogRewritten(AuditUnavailable):
    """The audit log no longer extends the newest checkpoint the vault trusts (``vault.audit.
    anchor``): nothing more is appended to it or signed over it."""
