"""vault.policy.delegation: the policy document (SPEC §3) and the issuance decision."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vault.domain import Subject
from vault.errors import (
    InvalidRequest,
    InvalidTTL,
    ScopeNotAllowed,
    SubjectInactive,
    SubjectNotAllowed,
    VaultError,
)
from vault.policy.delegation import (
    MAX_REASON_CHARS,
    DelegationPolicy,
    Grant,
    check_reason,
    decide,
    parse_policy,
)
from vault.policy.scopes import default_table

KNOWN = default_table().names
VAULT_MAX_TTL = 3600
DEFAULT_TTL = 300


def subject(role: str = "user", *, active: bool = True, id: str = "s-1") -> Subject:
    return Subject(id=id, email=f"{id}@example.test", name="Sam", role=role, active=active)


def parse(obj: Any) -> DelegationPolicy:
    return parse_policy(obj, known_scopes=KNOWN, vault_max_ttl=VAULT_MAX_TTL)


def grant(
    policy: DelegationPolicy,
    who: Subject | None = None,
    *,
    scope: tuple[str, ...] = ("chat", "models:read"),
    ttl: int | None = None,
    default_ttl: int = DEFAULT_TTL,
    vault_max_ttl: int = VAULT_MAX_TTL,
) -> Grant:
    return decide(
        policy,
        who or subject(),
        scope=scope,
        ttl_seconds=ttl,
        known_scopes=KNOWN,
        default_ttl=default_ttl,
        vault_max_ttl=vault_max_ttl,
    )


def refused(leaf: type[VaultError], policy: DelegationPolicy, who: Subject | None = None, **kw):
    with pytest.raises(leaf) as info:
        grant(policy, who, **kw)
    assert type(info.value) is leaf
    return info.value


# --- parse_policy ------------------------------------------------------------------------------


@pytest.mark.parametrize("obj", [None, {}, {"subject_roles": None, "subjects": None}])
def test_empty_policy_is_the_default(obj):
    policy = parse(obj)
    assert policy == DelegationPolicy()
    assert policy.subject_roles == ("user",)
    assert policy.subjects is None
    assert policy.scopes is None
    assert policy.max_ttl_seconds is None


def test_full_policy():
    policy = parse(
        {
            "subject_roles": ["admin", "user", "admin"],
            "subjects": ["s-1", "s-2", "s-1"],
            "scopes": ["chat", "all", "chat"],
            "max_ttl_seconds": VAULT_MAX_TTL,
        }
    )
    assert policy == DelegationPolicy(
        subject_roles=("admin", "user"),
        subjects=("s-1", "s-2"),
        scopes=("chat", "all"),
        max_ttl_seconds=VAULT_MAX_TTL,
    )


def test_to_dict_is_the_pinned_shape():
    assert DelegationPolicy().to_dict() == {
        "subject_roles": ["user"],
        "subjects": None,
        "scopes": None,
        "max_ttl_seconds": None,
    }


@given(
    roles=st.lists(st.sampled_from(["admin", "user"]), unique=True, max_size=2),
    subjects=st.none()
    | st.lists(
        st.text(st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=6),
        unique=True,
        max_size=3,
    ),
    scopes=st.none() | st.lists(st.sampled_from(KNOWN), unique=True, max_size=4),
    max_ttl=st.none() | st.integers(min_value=1, max_value=VAULT_MAX_TTL),
)
def test_to_dict_round_trip(roles, subjects, scopes, max_ttl):
    document = {
        "subject_roles": roles,
        "subjects": subjects,
        "scopes": scopes,
        "max_ttl_seconds": max_ttl,
    }
    policy = parse(document)
    assert policy.to_dict() == document
    assert parse(policy.to_dict()) == policy


BAD_POLICIES: dict[str, Any] = {
    "list": ["user"],
    "string": "user",
    "number": 1,
    "unknown-member": {"roles": ["user"]},
    "unknown-member-beside-good": {"subject_roles": ["user"], "admin": True},
    "roles-string": {"subject_roles": "user"},
    "roles-int": {"subject_roles": [1]},
    "roles-empty-string": {"subject_roles": [""]},
    "roles-pending": {"subject_roles": ["pending"]},
    "roles-user-and-pending": {"subject_roles": ["user", "pending"]},
    "roles-owner": {"subject_roles": ["owner"]},
    "roles-uppercase": {"subject_roles": ["Admin"]},
    "subjects-string": {"subjects": "s-1"},
    "subjects-null-item": {"subjects": [None]},
    "subjects-empty-string": {"subjects": [""]},
    "subjects-object": {"subjects": {"s-1": True}},
    "scopes-string": {"scopes": "chat"},
    "scopes-unknown": {"scopes": ["chat", "admin:everything"]},
    "scopes-int": {"scopes": [1]},
    "ttl-zero": {"max_ttl_seconds": 0},
    "ttl-negative": {"max_ttl_seconds": -5},
    "ttl-bool": {"max_ttl_seconds": True},
    "ttl-float": {"max_ttl_seconds": 60.0},
    "ttl-string": {"max_ttl_seconds": "60"},
    "ttl-above-vault-max": {"max_ttl_seconds": VAULT_MAX_TTL + 1},
}


@pytest.mark.parametrize("obj", BAD_POLICIES.values(), ids=BAD_POLICIES.keys())
def test_bad_policies(obj):
    with pytest.raises(InvalidRequest) as info:
        parse(obj)
    assert type(info.value) is InvalidRequest
    assert info.value.code == "invalid_request"


def test_ttl_above_a_smaller_vault_max_is_refused():
    with pytest.raises(InvalidRequest):
        parse_policy({"max_ttl_seconds": 601}, known_scopes=KNOWN, vault_max_ttl=600)
    policy = parse_policy({"max_ttl_seconds": 600}, known_scopes=KNOWN, vault_max_ttl=600)
    assert policy.max_ttl_seconds == 600


def test_allowed_scopes():
    assert DelegationPolicy().allowed_scopes(KNOWN) == tuple(n for n in KNOWN if n != "all")
    listed = DelegationPolicy(scopes=("all", "chat", "retired"))
    assert listed.allowed_scopes(KNOWN) == ("all", "chat")  # no longer known: dropped


def test_max_ttl_never_exceeds_the_vault():
    assert DelegationPolicy().max_ttl(VAULT_MAX_TTL) == VAULT_MAX_TTL
    assert DelegationPolicy(max_ttl_seconds=600).max_ttl(VAULT_MAX_TTL) == 600
    # The vault maximum was lowered after the policy was written.
    assert DelegationPolicy(max_ttl_seconds=3600).max_ttl(900) == 900


# --- decide: subjects --------------------------------------------------------------------------


def test_default_policy_grants_an_active_user():
    assert grant(DelegationPolicy()) == Grant(scope=("chat", "models:read"), ttl_seconds=300)


@pytest.mark.parametrize(
    "who",
    [
        subject("user", active=False),
        subject("admin", active=False),
        subject("pending", active=True),
        subject("pending", active=False),
    ],
    ids=["inactive-user", "inactive-admin", "pending", "inactive-pending"],
)
@pytest.mark.parametrize(
    "policy",
    [DelegationPolicy(), DelegationPolicy(subject_roles=("admin", "user", "pending"))],
    ids=["default", "permissive"],
)
def test_inactive_or_pending_subject(who, policy):
    exc = refused(SubjectInactive, policy, who)
    assert exc.code == "subject_inactive"


def test_admin_needs_admin_in_subject_roles():
    exc = refused(SubjectNotAllowed, DelegationPolicy(), subject("admin"))
    assert exc.code == "subject_not_allowed"
    refused(SubjectNotAllowed, parse({"subject_roles": ["user"]}), subject("admin"))
    policy = parse({"subject_roles": ["admin"]})
    assert grant(policy, subject("admin")).ttl_seconds == DEFAULT_TTL
    refused(SubjectNotAllowed, policy, subject("user"))  # admin only means admin only
    both = parse({"subject_roles": ["admin", "user"]})
    grant(both, subject("admin"))
    grant(both, subject("user"))


def test_unknown_subject_role_is_not_allowed():
    refused(SubjectNotAllowed, DelegationPolicy(), subject("superuser"))


def test_empty_subject_roles_allows_no_one():
    refused(SubjectNotAllowed, parse({"subject_roles": []}), subject("user"))


def test_subject_allow_list():
    policy = parse({"subjects": ["s-1", "s-2"]})
    grant(policy, subject(id="s-1"))
    grant(policy, subject(id="s-2"))
    refused(SubjectNotAllowed, policy, subject(id="s-3"))
    # The list narrows the roles; it does not widen them.
    refused(SubjectNotAllowed, policy, subject("admin", id="s-1"))


def test_empty_subject_allow_list_allows_no_one():
    refused(SubjectNotAllowed, parse({"subjects": []}), subject())


# --- decide: scopes ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n in KNOWN if n != "all"])
def test_default_policy_allows_every_scope_but_all(name):
    assert grant(DelegationPolicy(), scope=(name,)).scope == (name,)


def test_all_is_refused_by_default():
    exc = refused(ScopeNotAllowed, DelegationPolicy(), scope=("all",))
    assert exc.code == "scope_not_allowed"
    refused(ScopeNotAllowed, DelegationPolicy(), scope=("chat", "all"))


def test_all_when_the_policy_lists_it():
    policy = parse({"scopes": ["all"]})
    assert grant(policy, scope=("all",)).scope == ("all",)
    refused(ScopeNotAllowed, policy, scope=("chat",))  # a listed policy is exactly its list


def test_listed_scopes_only():
    policy = parse({"scopes": ["chat", "models:read"]})
    assert grant(policy, scope=("models:read", "chat")).scope == ("models:read", "chat")
    refused(ScopeNotAllowed, policy, scope=("chat", "files"))


def test_unknown_scope_is_never_allowed():
    refused(ScopeNotAllowed, DelegationPolicy(), scope=("admin:everything",))
    refused(ScopeNotAllowed, DelegationPolicy(scopes=("retired",)), scope=("retired",))


def test_subject_is_checked_before_scope():
    refused(SubjectInactive, DelegationPolicy(), subject(active=False), scope=("all",))
    refused(SubjectNotAllowed, DelegationPolicy(), subject("admin"), scope=("all",))


# --- decide: ttl -------------------------------------------------------------------------------


def test_ttl_none_takes_the_default():
    assert grant(DelegationPolicy()).ttl_seconds == DEFAULT_TTL


def test_ttl_none_is_capped_by_the_policy_max():
    assert grant(parse({"max_ttl_seconds": 120})).ttl_seconds == 120


def test_ttl_none_is_capped_by_the_vault_max():
    assert grant(DelegationPolicy(), default_ttl=900, vault_max_ttl=600).ttl_seconds == 600


@pytest.mark.parametrize("ttl", [1, 60, VAULT_MAX_TTL])
def test_ttl_within_limits_is_kept(ttl):
    assert grant(DelegationPolicy(), ttl=ttl).ttl_seconds == ttl


@pytest.mark.parametrize(
    ("policy_max", "ttl"),
    [(None, VAULT_MAX_TTL + 1), (None, 10**9), (600, 601), (600, VAULT_MAX_TTL)],
)
def test_ttl_above_the_max_is_refused_never_clamped(policy_max, ttl):
    policy = parse({"max_ttl_seconds": policy_max})
    exc = refused(InvalidTTL, policy, ttl=ttl)
    assert exc.code == "invalid_ttl"


@pytest.mark.parametrize("ttl", [0, -1])
def test_ttl_below_one_is_refused(ttl):
    refused(InvalidTTL, DelegationPolicy(), ttl=ttl)


@given(
    policy_max=st.none() | st.integers(min_value=1, max_value=VAULT_MAX_TTL),
    ttl=st.none() | st.integers(min_value=-10, max_value=2 * VAULT_MAX_TTL),
    default_ttl=st.integers(min_value=1, max_value=VAULT_MAX_TTL),
)
def test_ttl_is_granted_as_asked_or_refused(policy_max, ttl, default_ttl):
    policy = parse({"max_ttl_seconds": policy_max})
    limit = policy_max or VAULT_MAX_TTL
    if ttl is None:
        assert grant(policy, default_ttl=default_ttl).ttl_seconds == min(default_ttl, limit)
    elif 1 <= ttl <= limit:
        assert grant(policy, ttl=ttl, default_ttl=default_ttl).ttl_seconds == ttl
    else:
        with pytest.raises(InvalidTTL):
            grant(policy, ttl=ttl, default_ttl=default_ttl)


# --- check_reason ------------------------------------------------------------------------------


@pytest.mark.parametrize("reason", [None, ""])
def test_no_reason_when_not_required(reason):
    assert check_reason(reason, required=False) is None


@pytest.mark.parametrize("reason", [None, ""])
def test_no_reason_when_required(reason):
    with pytest.raises(InvalidRequest) as info:
        check_reason(reason, required=True)
    assert type(info.value) is InvalidRequest


@pytest.mark.parametrize("required", [True, False])
@pytest.mark.parametrize("reason", [" ", "   ", "\t\n", "\u00a0\u2003"])
def test_blank_reason(reason, required):
    with pytest.raises(InvalidRequest) as info:
        check_reason(reason, required=required)
    assert type(info.value) is InvalidRequest


@pytest.mark.parametrize("required", [True, False])
def test_reason_length(required):
    assert MAX_REASON_CHARS == 500
    assert check_reason("x" * 500, required=required) == "x" * 500
    assert check_reason("🚀" * 500, required=required) == "🚀" * 500  # characters, not bytes
    with pytest.raises(InvalidRequest):
        check_reason("x" * 501, required=required)


def test_reason_is_returned_unchanged():
    assert check_reason(" ticket #42 ", required=True) == " ticket #42 "


@pytest.mark.parametrize(
    "subject_id",
    [
        "u\n1",
        "u\x1b1",
        "u\x9b1",
        "u" * 321,
        "dv_" + "A" * 43,
        "x eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ1In0.c2ln",
    ],
)
def test_subject_ids_in_a_new_policy_that_cannot_be_audited_are_refused(subject_id: str) -> None:
    with pytest.raises(InvalidRequest):
        parse({"subjects": ["u-1", subject_id]})


def test_a_stored_policy_is_read_even_with_such_a_subject_id() -> None:
    policy = parse_policy(
        {"subjects": ["u\n1"]}, known_scopes=KNOWN, vault_max_ttl=VAULT_MAX_TTL, stored=True
    )
    assert policy.subjects == ("u\n1",)
