"""The scope table a serving vault decides with, recorded in the audit log.

Whether a use of a token is ``allowed`` depends on the scope table (``VAULT_SCOPES_FILE`` or the
built-in one), which an operator may change between two starts. So that verification judges the
uses by the tables they were decided with, and an offline reviewer needs nothing but the export
and the audit keys, a serving vault appends a ``scopes.loaded`` entry with its whole table, signed
with its audit key (``vault.audit.recorded_scopes``), when it starts, unless the last table
recorded, with a valid signature, is the same. ``SemanticChecker`` judges each use against the
tables recorded before it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlmodel import Session

from vault.audit.appender import Job, JobContext
from vault.audit.entry import SCOPES_LOADED, Draft
from vault.audit.recorded_scopes import recorded_table, signed_record, spelling
from vault.crypto.canonical import parse_unique_json
from vault.crypto.keys import KeyPair
from vault.policy.scopes import ScopeTable
from vault.storage import audit_repo
from vault.storage.engine import Tx

if TYPE_CHECKING:
    from vault.ops.runtime import Vault


def record_job(
    table: ScopeTable,
    key: Callable[[Tx], KeyPair],
    keys: Callable[[str], Ed25519PublicKey | None],
) -> Job[bool]:
    """A job that records ``table``, signed with the audit key ``key`` gives in the job's
    transaction, unless the last table recorded is the same and signed by one of ``keys``;
    ``True`` if it did. Run under the chain lock, so workers starting together record it once."""
    mine = spelling(table)

    def job(session: Session, ctx: JobContext) -> bool:
        last = audit_repo.latest_data(session, SCOPES_LOADED)
        if last is not None:
            try:
                if recorded_table(parse_unique_json(last), keys)[0] == mine:
                    return False
            except (ValueError, RecursionError):
                pass  # not a table the vault recorded: this one is
        data = signed_record(table, key(session))
        ctx.record(Draft(type=SCOPES_LOADED, actor=None, subject=None, data=data))
        return True

    return job


def record_scopes(vault: Vault) -> bool:
    """Record ``vault``'s scope table unless it is the last recorded (``record_job``): what a
    serving vault does first, its first write. ``True`` if it wrote an entry."""
    return vault.appender.run(record_job(vault.scopes, vault.keys.audit_now, vault.keys.audit_key))
