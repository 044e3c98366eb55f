"""Creating and rotating signing keys (jobs: every change is audited in the same commit)."""

from __future__ import annotations

from sqlmodel import Session

from vault.audit.appender import Job, JobContext
from vault.audit.entry import KEY_CREATED, KEY_ROTATED, Draft
from vault.clock import format_ts
from vault.crypto import keys
from vault.crypto.canonical import canonical_text
from vault.errors import InvalidRequest
from vault.storage import keys_repo


def create_key(
    session: Session, ctx: JobContext, master_key: bytes, purpose: str, actor: str | None = None
) -> str:
    pair = keys.generate(purpose)
    keys_repo.insert_key(
        session,
        kid=pair.kid,
        purpose=purpose,
        public_jwk=canonical_text(keys.public_jwk(pair.public_key, pair.kid)),
        private_sealed=keys.seal_private(master_key, pair),
        created_at=format_ts(ctx.now),
    )
    ctx.record(
        Draft(
            type=KEY_CREATED, actor=actor, subject=None, data={"kid": pair.kid, "purpose": purpose}
        )
    )
    return pair.kid


def rotate_job(
    master_key: bytes, purpose: str, *, actor: str | None, max_ttl: int, leeway: int
) -> Job[dict[str, object]]:
    """Retire the active key of ``purpose`` and make a new one.

    A retired token key stays published until every token it signed has expired: the later of
    the last ``exp`` it signed and ``now + max_ttl`` (a token being signed concurrently by a
    process that has not yet seen the rotation), plus the verifiers' leeway. Retired audit keys
    stay published forever, so old checkpoints can always be checked.
    """
    if purpose not in keys.PURPOSES:
        raise InvalidRequest(f"purpose must be one of {', '.join(keys.PURPOSES)}")

    def job(session: Session, ctx: JobContext) -> dict[str, object]:
        now = int(ctx.now.timestamp())
        old = keys_repo.active_key(session, purpose)
        new_kid = create_key(session, ctx, master_key, purpose, actor)
        publish_until: int | None = None
        if old is not None:
            last_exp = keys_repo.latest_exp_signed_by(session, old.kid) or 0
            publish_until = max(now + max_ttl, last_exp) + leeway
            if purpose == keys.AUDIT:
                publish_until = 2**53 - 1
            keys_repo.retire_key(
                session, old.kid, retired_at=format_ts(ctx.now), publish_until=publish_until
            )
        result: dict[str, object] = {
            "purpose": purpose,
            "kid": new_kid,
            "previous_kid": None if old is None else old.kid,
            "previous_published_until": publish_until,
        }
        ctx.record(Draft(type=KEY_ROTATED, actor=actor, subject=None, data=dict(result)))
        return result

    return job
