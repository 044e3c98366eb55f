"""The scope table a serving vault decides with, recorded in the audit log.

Whether a use of a token is ``allowed`` depends on the scope table (``VAULT_SCOPES_FILE`` or the
built-in one), which an operator may change between two starts. So that verification judges each
use by the table it was decided with, and an offline reviewer needs nothing but the export, a
serving vault appends a ``scopes.loaded`` entry with its whole table when it starts, unless the
last one recorded is the same table. ``SemanticChecker`` takes each such entry as the table in
force from there on.
"""

from __future__ import annotations

from sqlmodel import Session

from vault.audit.appender import Job, JobContext
from vault.audit.entry import SCOPES_LOADED, Draft
from vault.crypto.canonical import canonical_text
from vault.policy.scopes import ScopeTable
from vault.storage import audit_repo


def record_job(table: ScopeTable) -> Job[bool]:
    """A job that records ``table`` if it is not the last table recorded; ``True`` if it did.
    Run under the chain lock, so workers starting together record it once."""
    record = table.record()
    spelled = canonical_text(record)  # as the log stores ``data``

    def job(session: Session, ctx: JobContext) -> bool:
        if audit_repo.latest_data(session, SCOPES_LOADED) == spelled:
            return False
        ctx.record(Draft(type=SCOPES_LOADED, actor=None, subject=None, data=record))
        return True

    return job
