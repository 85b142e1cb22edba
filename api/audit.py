"""The audit trail of admin actions: one JSON line per action on the `persona.audit` logger (the
worker writes it to <data_dir>/audit.log). It never holds secrets: the key's name, not the key."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from aiohttp import web

audit_log = logging.getLogger("persona.audit")


def audit(request: web.Request, action: str, **details: Any) -> None:
    from api.app import KEY_NAME  # the key name the auth middleware stored

    record = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "action": action,
        "key": request.get(KEY_NAME, ""),
        "remote": request.remote or "",
        "method": request.method,
        "path": request.path,
        **details,
    }
    audit_log.info(json.dumps(record, sort_keys=True))
