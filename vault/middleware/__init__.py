"""The verifier middleware (SPEC §8): pure ASGI, for any ASGI app; no FastAPI, no SQLModel.

It depends on pyjwt/cryptography (through ``vault.tokens``), ``vault.policy.scopes`` (pure) and
httpx, so it installs into Open WebUI's own environment.
"""

from vault.middleware.verifier import (
    DelegationExpired,
    DelegationMiddleware,
    SubjectRoleChanged,
    UnknownUser,
    UserMapper,
    VerifierConfig,
)

__all__ = [
    "DelegationExpired",
    "DelegationMiddleware",
    "SubjectRoleChanged",
    "UnknownUser",
    "UserMapper",
    "VerifierConfig",
]
