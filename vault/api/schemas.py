"""Request and response shapes, for the OpenAPI document (SPEC §6).

Bodies are parsed by the operations themselves (so that a refused token request is audited
whatever was wrong with it); these models describe them to clients.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Body(BaseModel):
    """A request body: unknown members are refused (400), and the document says so."""

    model_config = ConfigDict(extra="forbid")


class TokenRequestBody(Body):
    subject: str = Field(description="Subject id or email")
    scope: str | None = Field(None, description='Space-separated; default "chat models:read"')
    ttl_seconds: int | None = Field(None, ge=1, description="Above the policy's max: 400")
    reason: str | None = Field(None, min_length=1, max_length=500)


class TokenResponse(BaseModel):
    access_token: str
    token_type: Literal["Bearer"]
    expires_in: int
    scope: str
    jti: str
    issued_token_type: str


class IntrospectBody(Body):
    token: str
    method: str | None = None
    path: str | None = None
    client_ip: str | None = None


class RevokeBody(Body):
    jti: str | None = None
    subject: str | None = None
    actor: str | None = None


class Policy(Body):
    subject_roles: list[Literal["admin", "user"]] | None = None
    subjects: list[str] | None = None
    scopes: list[str] | None = None
    max_ttl_seconds: int | None = None


class PrincipalBody(Body):
    name: str
    roles: list[Literal["owner", "delegator", "auditor", "verifier"]]
    policy: dict[str, Any] | None = Field(None, description="See Policy")


class SubjectBody(Body):
    email: str
    name: str | None = None
    role: Literal["admin", "user", "pending"] = "user"
    active: bool = True


class RotateBody(Body):
    purpose: Literal["token", "audit"] = "token"


class ErrorBody(BaseModel):
    error: str
    error_description: str


def body(model: type[BaseModel], *, required: bool = True) -> dict[str, Any]:
    """``openapi_extra`` documenting a JSON body that the route reads itself."""
    return {
        "requestBody": {
            "required": required,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody} for status in (400, 401, 403, 404, 409, 413, 503)
}
