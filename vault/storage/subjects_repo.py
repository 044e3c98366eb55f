"""Subjects: the Open WebUI users tokens can be scoped to."""

from __future__ import annotations

from sqlmodel import Session, col, select

from vault.domain import Subject
from vault.errors import AmbiguousSubject
from vault.storage.engine import Tx, fetch_all, fetch_first
from vault.storage.tables import SubjectRow


def _subject(row: SubjectRow) -> Subject:
    return Subject(id=row.id, email=row.email, name=row.name, role=row.role, active=row.active)


_SUBJECT_BY = "SELECT id, email, name, role, active FROM subjects WHERE "


def _read_subject(session: Tx, where: str, value: str) -> Subject | None:
    row = fetch_first(session, _SUBJECT_BY + where, (value,))
    if row is None:
        return None
    return Subject(id=row[0], email=row[1], name=row[2], role=row[3], active=bool(row[4]))


def get_subject(session: Tx, subject_id: str) -> Subject | None:
    return _read_subject(session, "id = ?", subject_id)


def find_subject(session: Tx, id_or_email: str) -> Subject | None:
    """By id, else by (case-insensitive) email. ``AmbiguousSubject`` for a name that is one
    subject's id and another's email: writes refuse such pairs (``ids_folding_to``), but a
    database may hold one from before, and the name must not pick one of the two."""
    found = get_subject(session, id_or_email)
    if "@" not in id_or_email:
        return found
    by_email = _read_subject(session, "email = ?", id_or_email.lower())
    if found is not None and by_email is not None and by_email.id != found.id:
        raise AmbiguousSubject(
            "this name is one subject's id and another's email: name the subject by its id"
        )
    return found or by_email


def ids_folding_to(session: Tx, email: str) -> list[str]:
    """The ids that name the same as ``email`` (a lower-cased email) does, case aside: such an
    id and a subject with that email would make one name mean two subjects. Only ids holding
    an ``@`` can; Open WebUI's are UUIDs, so this reads few rows."""
    rows = fetch_all(session, "SELECT id FROM subjects WHERE id LIKE ?", ("%@%",))
    return [row[0] for row in rows if row[0].lower() == email]


def email_owner(session: Session, email: str) -> str | None:
    row = session.exec(select(SubjectRow.id).where(SubjectRow.email == email.lower())).first()
    return row


def upsert_subject(session: Session, subject: Subject, *, updated_at: str) -> Subject | None:
    """Insert or replace; return the previous value (``None`` when new)."""
    row = session.get(SubjectRow, subject.id)
    before = None if row is None else _subject(row)
    if row is None:
        row = SubjectRow(id=subject.id, email="", name="", role="", updated_at=updated_at)
    row.email = subject.email.lower()
    row.name = subject.name
    row.role = subject.role
    row.active = subject.active
    row.updated_at = updated_at
    session.add(row)
    session.flush()
    return before


def list_subjects(session: Session, *, limit: int, after_id: str | None) -> list[Subject]:
    stmt = select(SubjectRow).order_by(col(SubjectRow.id)).limit(limit)
    if after_id is not None:
        stmt = stmt.where(col(SubjectRow.id) > after_id)
    return [_subject(row) for row in session.exec(stmt).all()]


def updated_at(session: Session, subject_id: str) -> str | None:
    """When the subject's row was last written (canonical UTC text, which sorts by time)."""
    row = session.get(SubjectRow, subject_id)
    return None if row is None else row.updated_at
