"""Bad input against the served OpenAPI document (issue "Adversarial proof").

schemathesis generates requests for every operation of ``/openapi.json`` -- cases that fit the
document and cases that break it -- and sends them to a real, seeded vault on 127.0.0.1. Whatever
it sends, the vault never answers 5xx, and every error is ``application/json`` with exactly the
members ``error`` and ``error_description`` (SPEC §6).

Each caller runs every operation: the owner (who may call almost everything), the delegator (so
``/v1/token`` bodies reach the issuing code with a valid credential; some name a seeded subject
and a known scope, so tokens are really issued), the verifier (so ``/v1/introspect`` bodies are
parsed, some holding a real token) and anonymous (no credential). Bounded for CI: a few examples
per operation and mode, derandomized so a failure reproduces.
SQLite only: the input handling is the same on both databases and time is what CI lacks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import APIOperation, Case, GenerationMode

from tests.support import Api

SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
MAX_EXAMPLES = 15  # per operation, mode and caller: about 2,000 requests in all
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
# Seeded data a generated /v1/token body may be pointed at, so tokens are really issued.
KNOWN_SUBJECTS = ("u-1", "alice@example.com", "u-2", "bob@example.com", "u-3")
KNOWN_SCOPES = ("chat", "models:read", "chat models:read", "files chats:read")
FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    phases=(Phase.explicit, Phase.generate, Phase.shrink),
    # Generated bodies and parameters are large by design; the server is real and not instant.
    suppress_health_check=list(HealthCheck),
    print_blob=False,
    report_multiple_bugs=False,  # one shrunk failure per operation and mode is enough to act on
)


@dataclass(frozen=True)
class Seeded:
    credentials: dict[str, str]
    token: str


def seed(api: Api) -> Seeded:
    api.subject("u-1", "alice@example.com")
    api.subject("u-2", "bob@example.com", role="admin")
    api.subject("u-3", "carol@example.com", active=False)
    _, delegator = api.principal("support-bot", "delegator")
    _, verifier = api.principal("owui", "verifier")
    _, auditor = api.principal("reviewer", "auditor")
    issued = api.token(delegator, "u-1", scope="chat")
    assert issued.status_code == 200, issued.text
    r = api.call("POST", "/v1/audit/checkpoint", api.owner)
    assert r.status_code == 201, r.text
    credentials = {
        "owner": api.owner,
        "delegator": delegator,
        "verifier": verifier,
        "auditor": auditor,
    }
    return Seeded(credentials, issued.json()["access_token"])


def served_schema(api: Api) -> Any:
    r = api.call("GET", "/openapi.json")
    assert r.status_code == 200, r.text
    return schemathesis.openapi.from_dict(r.json())


def operations(schema: Any) -> list[APIOperation]:
    found = []
    for result in schema.get_all_operations():
        found.append(result.ok())  # raises if the document has an operation it cannot read
    assert len(found) >= 20, [op.label for op in found]
    return found


def problem(response: schemathesis.Response) -> str | None:
    """What is wrong with this answer, or None: no 5xx; errors are the SPEC's JSON body."""
    status = response.status_code
    if status >= 500:
        return f"server error {status}: {response.content[:300]!r}"
    if status < 400:
        return None
    media = ";".join(response.headers.get("content-type", [""])).split(";")[0].strip()
    if media != "application/json":
        return f"{status} with content-type {media!r}: {response.content[:300]!r}"
    try:
        body = json.loads(response.content)
    except ValueError:
        return f"{status} with a body that is not JSON: {response.content[:300]!r}"
    if not isinstance(body, dict) or set(body) != {"error", "error_description"}:
        return f"{status} with members other than error, error_description: {body!r}"
    if not all(isinstance(body[k], str) and body[k] for k in body):
        return f"{status} with an empty or non-string error member: {body!r}"
    return None


def aims(known_token: str) -> st.SearchStrategy[dict[str, Any]]:
    """Members that replace generated ones in about half the bodies, so the code behind parsing
    is reached: a seeded subject with a known scope and a reason gets a token issued (or a
    policy denial), a real token gets introspected."""
    aimed = st.fixed_dictionaries(
        {
            "subject": st.sampled_from(KNOWN_SUBJECTS),
            "scope": st.sampled_from(KNOWN_SCOPES),
            "reason": st.just("schemathesis: TICKET-7"),
            "token": st.just(known_token),
        },
        optional={"ttl_seconds": st.sampled_from([60, 300])},
    )
    return st.just({}) | aimed


AIMED = {
    "/v1/token": {"subject", "scope", "ttl_seconds", "reason"},
    "/v1/introspect": {"token", "method", "path", "client_ip"},
}


def aim_at_seeded(case: Case, aim: dict[str, Any]) -> None:
    members = AIMED.get(case.operation.path)
    if members is None or not isinstance(case.body, dict) or not aim:
        return
    # The document allows members the vault refuses (it answers 400 to unknown ones): drop them,
    # or every aimed body would be refused before it reaches the code behind the parser.
    case.body = {
        **{k: v for k, v in case.body.items() if k in members},
        **{k: v for k, v in aim.items() if k in members},
    }


def fuzz(
    operation: APIOperation,
    mode: GenerationMode,
    *,
    base_url: str,
    credential: str | None,
    known_token: str,
    session: requests.Session,
) -> list[str]:
    found: list[str] = []
    headers = {} if credential is None else {"Authorization": f"Bearer {credential}"}

    @FUZZ_SETTINGS
    @given(
        case=operation.as_strategy(generation_mode=mode),
        aim=aims(known_token),
    )
    def run(case: Case, aim: dict[str, Any]) -> None:
        if mode.is_positive:
            aim_at_seeded(case, aim)
        response = case.call(base_url=base_url, session=session, headers=headers, timeout=60)
        wrong = problem(response)
        if wrong is not None:
            found.append(f"{mode} {operation.label}: {wrong}\n  {case.as_curl_command()}")
            raise AssertionError(wrong)  # let hypothesis shrink it to the smallest case

    try:
        run()
    except Unsatisfiable:
        # Nothing in the document can be broken (no parameters, or only free-form strings in
        # the path): schemathesis has no negative case to offer. Positive cases must exist.
        assert mode.is_negative, f"no positive case for {operation.label}"
    except AssertionError:
        assert found, "hypothesis failed without a recorded problem"
    return found[-1:]  # the shrunk (last) failing case


@SQLITE_ONLY
@pytest.mark.parametrize("who", ["owner", "delegator", "verifier", "anonymous"])
def test_bad_input_never_breaks_the_error_contract(api: Api, who: str) -> None:
    seeded = seed(api)
    schema = served_schema(api)
    problems: list[str] = []
    with requests.Session() as session:
        for operation in operations(schema):
            for mode in MODES:
                problems += fuzz(
                    operation,
                    mode,
                    base_url=api.url,
                    credential=seeded.credentials.get(who),
                    known_token=seeded.token,
                    session=session,
                )
    assert not problems, "\n".join(problems)
    if who == "delegator":  # the aimed bodies did reach issuance, not only the parser
        assert len(api.entries(type="token.issued")) > 1
    # The run left the vault consistent: the audit chain still verifies.
    r = api.call("GET", "/v1/audit/verify", api.owner)
    assert r.status_code == 200, r.text
    assert r.json()["ok"] is True, r.json()
