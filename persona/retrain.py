"""Scheduled retraining in the worker (issue 17 item 5): `PERSONA_RETRAIN_HOURS` set, the worker
starts `python -m persona.retrain_job` (niced, a process of its own: the worker's event loop and
its HTTP API never wait on training) when a run is due (models/retrain.py's `Schedule`), at most
one at a time, killed after `MAX_RUN_S`. The child registers the new versions inactive with
their evaluation; with `PERSONA_RETRAIN_PROMOTE` on, the worker activates each one that beats
the active version on the held-out window (models.retrain.decide), through the registry like
`POST /v1/models/{name}/activate`, and audits it (`model_promoted`). Each run logs one line and
counts `persona_retrain_runs_total{outcome}`; `persona_retrain_last_success_timestamp_seconds`
is the end of the last run that registered a version.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
from typing import Any

from aiohttp import web
from mode import Service

from api.observability import TELEMETRY
from engine.audit import OK, audit_log, record
from engine.clock import Clock, WallClock
from engine.settings import Settings
from models.retrain import RETRAIN, Schedule, decide, retrained_at
from streams.registry import RegistryService

log = logging.getLogger("persona.retrain")

MAX_RUN_S = 6 * 3600.0  # a run still going after this is killed (outcome "failed")
FOLD_WAIT_S = 60.0  # seconds to wait for this worker to fold a version it is to promote
OUTCOMES = ("published", "promoted", "skipped", "failed")


class RetrainService(Service):
    """Runs the retraining schedule of one worker (see the module doc)."""

    def __init__(
        self, settings: Settings, registry: RegistryService, clock: Clock | None = None, **kw: Any
    ) -> None:
        super().__init__(**kw)
        assert settings.retrain_hours is not None
        self.settings = settings
        self.registry = registry
        self.clock = clock or WallClock()
        self.schedule = Schedule.every(settings.retrain_hours, self.clock.now_ms())
        self.runs = dict.fromkeys(OUTCOMES, 0)
        self.last_success: float | None = None  # seconds since the epoch
        self._attempted: list[int] = []

    @Service.task
    async def _follow_schedule(self) -> None:
        while not self.should_stop:
            await self.sleep(self.schedule.poll_s())
            if self.registry.loaded.is_set() and self._due():
                await self.run_once()

    def _due(self) -> bool:
        runs = [*self._attempted, *retrained_at(self.registry.listing())]
        return self.schedule.due(self.clock.now_ms(), runs)

    async def run_once(self) -> str:
        """One run: the child, then the promotions; returns and counts its outcome."""
        self._attempted = [self.clock.now_ms()]
        started = time.monotonic()
        try:
            result = await self._child()
            outcome, summary = await self._apply(result)
        except Exception as exc:
            outcome, summary = "failed", f"{type(exc).__name__}: {exc}"[:500]
        self.runs[outcome] += 1
        if outcome in ("published", "promoted"):
            self.last_success = time.time()
        level = logging.ERROR if outcome == "failed" else logging.INFO
        log.log(level, "retrain %s in %.0f s: %s", outcome, time.monotonic() - started, summary)
        return outcome

    def _command(self) -> list[str]:
        settings = self.settings
        assert settings.broker_url is not None  # a worker runs on a broker
        cmd = [sys.executable, "-m", "persona.retrain_job", "--broker", settings.broker_url]
        cmd += ["--data-dir", str(settings.data_dir), "--signer", f"retrain:{settings.own_url}"]
        state = self.registry.registry
        for name in ("recs", "churn"):
            manifest = state.versions[state.active(name)]
            if manifest.source != "package" and state.cache_dir is not None:
                cmd += ["--active", f"{name}={state.cache_dir / manifest.version}"]
        return cmd

    async def _child(self) -> dict[str, Any]:
        proc = await asyncio.create_subprocess_exec(
            *self._command(), stdout=asyncio.subprocess.PIPE
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), MAX_RUN_S)
        finally:
            if proc.returncode is None:  # timed out, or the worker is stopping
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        lines = out.decode("utf-8", "replace").strip().splitlines()
        result = json.loads(lines[-1]) if lines else {"error": "no result"}
        if proc.returncode != 0 or "error" in result:
            raise RuntimeError(f"exit {proc.returncode}: {result.get('error')}")
        return dict(result)

    async def _apply(self, result: dict[str, Any]) -> tuple[str, str]:
        """Promote what `decide` allows; (outcome, one-line summary) of the run."""
        published = [m for m in result["models"] if "version" in m]
        parts = [f"{result['events']} events"]
        parts += [
            f"{m['name']} skipped ({m['skipped']})" for m in result["models"] if "skipped" in m
        ]
        promoted = False
        for row in published:
            decision = decide(row["name"], row, self.settings.retrain_promote)
            parts.append(f"{row['name']} {row['version']} registered: {decision.reason}")
            if decision.promote:
                await self._promote(row, decision.reason)
                promoted = True
        outcome = "promoted" if promoted else "published" if published else "skipped"
        return outcome, "; ".join(parts)

    async def _promote(self, row: dict[str, Any], reason: str) -> None:
        name, version = row["name"], row["version"]
        replaced = self.registry.registry.active(name)
        await self._folded(version)
        await self.registry.activate(name, version)
        mark = row[RETRAIN]
        audit_log.info(
            record(
                "model_promoted", "retrain", OK, name=name, version=version, replaced=replaced,
                reason=reason, new=mark.get("new"), active=mark.get("active"),
            )
        )  # fmt: skip

    async def _folded(self, version: str) -> None:
        """Wait until this worker folded the version's records (it activates only what it has)."""
        deadline = time.monotonic() + FOLD_WAIT_S
        while not self._complete(version):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{version} not folded within {FOLD_WAIT_S:.0f} s")
            await asyncio.sleep(0.5)

    def _complete(self, version: str) -> bool:
        manifest = self.registry.registry.versions.get(version)
        return manifest is not None and manifest.complete

    def metric_lines(self) -> list[str]:
        """The runs and the last success for /metrics."""
        runs, last = "persona_retrain_runs_total", "persona_retrain_last_success_timestamp_seconds"
        lines = [f"# TYPE {runs} counter"]
        lines += [f'{runs}{{outcome="{o}"}} {n}' for o, n in self.runs.items()]
        lines += [f"# TYPE {last} gauge", f"{last} {self.last_success or 0}"]
        return lines


def retrain_services(
    settings: Settings, registry: RegistryService, web_app: web.Application
) -> list[Service]:
    """The worker's retraining service when `PERSONA_RETRAIN_HOURS` is set (else none)."""
    if settings.retrain_hours is None:
        return []
    service = RetrainService(settings, registry)
    web_app[TELEMETRY].text_sources.append(service.metric_lines)
    log.info(
        "retraining every %s h (promotion %s)",
        settings.retrain_hours,
        "on" if settings.retrain_promote else "off",
    )
    return [service]
