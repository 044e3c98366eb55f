"""The access log without secrets: uvicorn logs each request's path and query as they came, and
a caller may have put a credential or a token there (``PUT /v1/subjects/dv_...``, ``?jti=eyJ...``).

``log_config()`` is uvicorn's own logging configuration with ``RedactSecrets`` on the access
handler, for every worker (uvicorn applies it in each process it configures).
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from uvicorn.config import LOGGING_CONFIG

from vault.redact import redact_secrets

_PATH = 2  # uvicorn's access record: client address, method, path with query, version, status


class RedactSecrets(logging.Filter):
    """Replace whatever looks like a credential or a token in an access record's path."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) > _PATH:
            path = args[_PATH]
            if isinstance(path, str):
                shown = redact_secrets(path)  # escaped or not
                if shown is not path:
                    record.args = (*args[:_PATH], shown, *args[_PATH + 1 :])
        return True


def log_config() -> dict[str, Any]:
    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact_secrets"] = {"()": f"{__name__}.RedactSecrets"}
    config["handlers"]["access"]["filters"] = ["redact_secrets"]
    return config
