"""The model registry as a log: the records of the compacted `models` topic and their fold.

Every worker folds the same records in the same order (one partition) into the same state, so the
registry needs no shared disk; the files land in each worker's cache directory.

- `chunk/{version}/{publish}/{file}/{i}/{n}`: bytes i of n of one artifact file, sent by one
  publish (`publish`: its id, 16 hex digits) before its manifest;
- `version/{version}/{publish}`: JSON manifest: name, kind, version, created, metrics,
  files {file: {sha256, size, chunks}}, registered, publish;
- `active/{name}`: JSON {version, history (previously active, newest first), at};
- `experiment`: the running experiment as JSON (models.experiments), or null once stopped;
- `doc/{document}/{version}/{nonce}`: one version of an admin document edited with `If-Match`
  (`rules`: the merchandising rules; `content_experiments`), see "Admin documents" below.

Keys are unique per fact, so compaction keeps every version and the latest activation. Each
publish's records have keys of their own (its id), so two publishes of one version running at once
never share a key: compaction cannot mix their chunk sets, and the fold assembles each set apart.
The first manifest of a version in the log decides its content (a later one of other content is
refused), the same on every process, restarts included; the publish whose manifest lost withdraws
its records (tombstones, `streams.registry.publish`), and the one that won tombstones the chunk
sets of the version's other publishes (one that died half way, or lost). Records of earlier
releases (`chunk/{version}/{file}/{i}/{n}`, `version/{version}`: no publish id) still fold. The
models shipped in the package are versions too (source "package"); they are active until something
else is.

Admin documents. Every process folds the same records in the same order, so the fold decides which
of two edits based on the same version wins, the same way everywhere: a document record is
accepted only when its version is above the version folded so far, so of two records of version
N+1 the first in the log wins and the other is ignored (counted in `lost`); the process that put
the loser answers 412 (api/documents.py). What the fold ends on is the first record of the
highest version, which compaction cannot remove: each version's key is unique (the nonce), and
the only tombstones written are those the winner of a version sends for the older versions and
the losers it has folded (`superseded`). Earlier versions kept a document under the single key
`rules` / `content_experiments` (the last record wins); those still fold until the first
versioned record is accepted (then they are ignored), and a tombstone of that key still clears
the document (its versions start again from 1).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine import content_experiments as content
from engine.content_experiments import NO_EXPERIMENTS, ContentExperiments, parse_experiments
from engine.rules import NO_RULES, Rules, parse_rules, to_document
from models.artifacts import MAX_JSON_BYTES, ModelLoadError, json_metrics, rfc3339, utc_now
from models.bundle import KINDS, META, VERSION, Bundle, load_model
from models.churn import ChurnModel
from models.experiments import Experiment
from models.recs import Recommender
from models.registry import CHURN_FILE, DEFAULT_DIR

log = logging.getLogger("persona.models")

CHUNK_SIZE = 256 * 1024  # bytes per record: well under Kafka's default 1 MB message limit
MAX_CHUNKS = 16_384  # chunks of one file (4 GiB): spooled to disk, a bit each in memory
MAX_JSON_CHUNKS = -(-MAX_JSON_BYTES // CHUNK_SIZE)  # of a JSON file (models.artifacts)
MAX_PENDING = 8  # incomplete files spooled at once per process (`RegistryLog._chunk`)
SPOOL = ".part"  # suffix of a file being assembled: cache_dir/{version}/{file}.part
NEXT = ".next"  # of one assembled while another is cached, until the version's manifest picks
HISTORY = 20
PUBLISH = re.compile(r"[0-9a-f]{16}")  # a publish's id (`new_publish`): in its records' keys
Record = tuple[str, bytes | None]


@dataclass
class Manifest:
    name: str
    kind: str
    version: str
    created: str
    metrics: dict[str, Any]
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    registered: str = ""
    source: str = "registry"  # or "package" for the shipped defaults
    complete: bool = True
    publish: str = ""  # the id of the publish that sent it ("": a release before publish ids)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "version": self.version,
            "created": self.created,
            "metrics": self.metrics,
            "files": self.files,
            "registered": self.registered,
            "publish": self.publish,
        }


# -- writing records -------------------------------------------------------------------------


def _metrics(value: Any) -> dict[str, Any]:
    """A manifest's metrics as JSON values (models.artifacts.json_metrics), an object."""
    metrics = json_metrics(value) if isinstance(value, dict) else {}
    return metrics if isinstance(metrics, dict) else {}


def new_publish() -> str:
    """A new publish id (`PUBLISH`)."""
    return secrets.token_hex(8)


def publish_of(key: str) -> str:
    """The publish id in a chunk's or manifest's key ("": a key of a release before them)."""
    parts = key.split("/")
    if (parts[0] == "chunk" and len(parts) == 6) or (parts[0] == "version" and len(parts) == 3):
        return parts[2]
    return ""


def bundle_records(bundle: Bundle, publish: str | None = None) -> list[Record]:
    """The records that register `bundle` as one publish (`publish`, a new id by default): its
    chunks, then its manifest, each under a key holding the publish id."""
    publish = publish or new_publish()
    if not PUBLISH.fullmatch(publish):
        raise ValueError(f"a publish id is 16 hex digits, not {publish[:40]!r}")
    records: list[Record] = []
    files: dict[str, dict[str, Any]] = {}
    for file, data in sorted(bundle.files.items()):
        n = max(1, -(-len(data) // CHUNK_SIZE))
        for i in range(n):
            chunk = data[i * CHUNK_SIZE : (i + 1) * CHUNK_SIZE]
            records.append((f"chunk/{bundle.version}/{publish}/{file}/{i}/{n}", chunk))
        files[file] = {"sha256": bundle.digest(file), "size": len(data), "chunks": n}
    manifest = Manifest(
        bundle.name,
        bundle.kind,
        bundle.version,
        bundle.created,
        _metrics(bundle.metrics),
        files,
        registered=rfc3339(utc_now()),
        publish=publish,
    )
    manifest_key = f"version/{bundle.version}/{publish}"
    records.append((manifest_key, json.dumps(manifest.to_dict()).encode()))
    return records


def activation_record(name: str, version: str, history: list[str]) -> Record:
    value = {"version": version, "history": history[:HISTORY], "at": rfc3339(utc_now())}
    return f"active/{name}", json.dumps(value).encode()


def activation(state: RegistryLog, name: str, version: str | None) -> Record:
    """The record that activates `version` (None: roll back to the previously active one)."""
    current = state.active(name)
    history = state.history(name)
    if version is None:
        if not history:
            raise ValueError(f"{name}: no previously active version to roll back to")
        version, history = history[0], history[1:]
        state.check(name, version)
        return activation_record(name, version, history)
    state.check(name, version)
    if version == current:
        return activation_record(name, version, history)
    return activation_record(name, version, [current, *[v for v in history if v != version]])


def experiment_record(experiment: Experiment | None) -> Record:
    return "experiment", None if experiment is None else json.dumps(experiment.to_dict()).encode()


DOCUMENTS = ("rules", "content_experiments")  # the admin documents (the module doc)


class EditLost(Exception):
    """An edit of an admin document lost: another edit of the same version was folded first
    (or the document was at a later version already). `version`: the one folded now."""

    def __init__(self, document: str, version: str) -> None:
        super().__init__(f"the {document} are at version {version!r} now")
        self.document = document
        self.version = version


class EditUnsettled(Exception):
    """An admin document record was put but not folded by this process in time: whether it won
    is not known yet."""

    def __init__(self, document: str) -> None:
        super().__init__(f"the {document} edit was sent but is not folded here yet")
        self.document = document


def document_key(document: str, version: str, nonce: str | None = None) -> str:
    """The record key of one version of an admin document: unique per edit (`nonce`)."""
    return f"doc/{document}/{version}/{nonce or secrets.token_hex(8)}"


def rules_record(rules: Rules, nonce: str | None = None) -> Record:
    """The merchandising rules (engine/rules.py), one record on the `models` topic: every worker
    and reader folds it as it folds activations, and serves it with its models (the version
    wins only when it is the first record of a version above the folded one: the module doc)."""
    value = json.dumps(to_document(rules), separators=(",", ":")).encode()
    return document_key("rules", rules.version, nonce), value


def experiments_record(experiments: ContentExperiments, nonce: str | None = None) -> Record:
    """The content experiments (engine/content_experiments.py), one record on the `models`
    topic, folded and served like the rules."""
    document = content.to_document(experiments)
    value = json.dumps(document, separators=(",", ":")).encode()
    return document_key("content_experiments", experiments.version, nonce), value


# -- folding records -------------------------------------------------------------------------


@dataclass
class Held:
    """How far one admin document is folded: the accepted version's number and record key
    (None: none yet, or the single key of earlier versions), and the keys of versioned records
    folded since that no longer count (older versions, losers): the next winner's tombstones."""

    number: int = 0
    key: str | None = None
    superseded: dict[str, None] = field(default_factory=dict)  # in log order


def document_number(version: str) -> int:
    """A document version as a number (the server numbers them; anything else counts as 0)."""
    return int(version) if version.isascii() and version.isdigit() else 0


def _builtin() -> dict[str, Manifest]:
    churn = ChurnModel.load(DEFAULT_DIR / CHURN_FILE)
    meta = json.loads((DEFAULT_DIR / "recs.json").read_text("utf-8"))
    out = {}
    for name, kind, version, created, metrics in (
        ("churn", "logistic_regression", churn.version, churn.created, churn.metrics),
        ("recs", "item_knn", meta["version"], meta["created"], meta.get("metrics") or {}),
    ):
        out[version] = Manifest(name, kind, version, created, metrics, source="package")
    return out


class RegistryLog:
    """The registry's state, folded from the `models` topic's records.

    With a `cache_dir`, artifact chunks are assembled into `cache_dir/{version}/{file}`; without
    one (the CLI's read-only view), chunks are skipped and only the metadata is kept. With `only`
    too, only that version's artifact is assembled (the CLI test-loading the version it
    activates): the others keep their metadata.

    A file being assembled is spooled to `{file}.part` beside its target, each chunk written at
    its offset, and renamed to the target once every chunk has arrived: memory holds only which
    chunks arrived (`_Spool`, a bit a chunk). A file already cached is compared chunk by chunk
    and spooled only from the first chunk that differs (a restart, which reads the topic from its
    start, writes nothing again). Who decides which content a version has is its manifest:

    - a file the manifest verified (its digest matched, when the manifest was folded or when a
      chunk set completed after it) is never changed: a later chunk of other content (forged,
      late) is refused and counted in `refused`; the same bytes sent again are skipped;
    - each publish's chunks are assembled apart (its own `.part`, keyed by its publish id): two
      publishes of one version sent at once never make one file of both sets;
    - while no manifest of the version is known (a publish that died before its manifest, then
      the same version published again with other content; two publishes at once), a chunk set
      that completes with other content than the cached file is kept beside it as
      `{file}.{publish}.next` (`{file}.next` for a set without a publish id; one of the cached
      file's content removes its publish's), and the manifest, when it is folded, keeps
      whichever has its digest and removes the `.next` files: a restart folding an older set
      before the manifest never replaces a file the manifest verifies;
    - a file the known manifest has not verified (it did not match) is replaced by a chunk set
      that completes with the manifest's digest, and by no other (refused, the file stays):
      the version is complete once all its files are verified ("version" from `apply`).

    At most `MAX_PENDING` files are incomplete at once (compared or spooled): the least recently
    fed is dropped (logged, its .part removed), so abandoned publishes do not add up; a `.next`
    file waits for its version's manifest, at most MAX_PENDING per file of a version that has
    none (the oldest is removed). A tombstone of a chunk drops its publish's incomplete file.
    `.part` and `.next` files found at start were left by an earlier process; they are removed
    (the fold reads the topic from its start, so their chunks come again)."""

    def __init__(
        self, cache_dir: Path | None = None, only: str | None = None, keys_of: str | None = None
    ) -> None:
        self.cache_dir = cache_dir
        self.only = only
        # with `keys_of` (a version): the keys of its chunks and manifests folded and not
        # tombstoned, in log order (what the publish that won tombstones of the others)
        self.keys_of = keys_of
        self.keys: dict[str, None] = {}
        self.versions: dict[str, Manifest] = _builtin()
        self.defaults = {m.name: m.version for m in self.versions.values()}
        self.activations: dict[str, dict[str, Any]] = {}
        self.experiment: Experiment | None = None
        self.experiments: dict[str, Experiment] = {}
        self.rules: Rules = NO_RULES
        self.content_experiments: ContentExperiments = NO_EXPERIMENTS
        # the content experiments folded, by name, oldest first (a report outlives its run): the
        # newest `MAX_PAST`, so an admin putting new names cannot grow every process without end
        self.content_seen: dict[str, content.ContentExperiment] = {}
        self.held: dict[str, Held] = {name: Held() for name in DOCUMENTS}
        # files being assembled, by (version, publish, file), least recently fed first (`_chunk`)
        self._pending: dict[tuple[str, str, str], _Spool] = {}
        self.dropped = 0  # incomplete files dropped to keep within MAX_PENDING (logged)
        # (version, file) of cached files that matched their version's manifest: never changed
        self._verified: set[tuple[str, str]] = set()
        if cache_dir is not None:
            _remove_spools(cache_dir)
        self.refused = 0  # bad records logged and skipped (`apply`)
        self.mismatched = 0  # loads refused: a cached file not of its manifest's digest
        self.lost = 0  # admin document records that lost to another edit (logged, ignored)

    # -- queries ---------------------------------------------------------------------------------
    def active(self, name: str) -> str:
        record = self.activations.get(name)
        return str(record["version"]) if record else self.defaults[name]

    def history(self, name: str) -> list[str]:
        record = self.activations.get(name)
        return list(record.get("history") or []) if record else []

    def holds(self, key: str) -> bool:
        """Whether `key` is the record of an admin document's version folded now."""
        return any(held.key == key for held in self.held.values())

    def document_version(self, document: str) -> str:
        """The version of `document` ("rules", "content_experiments") folded now."""
        return self.rules.version if document == "rules" else self.content_experiments.version

    def listing(self) -> list[dict[str, Any]]:
        """GET /v1/models's list: every version, oldest first."""
        active = {self.active(n) for n in ("churn", "recs")}
        rows = [
            {
                "name": m.name,
                "version": m.version,
                "active": m.version in active,
                "created": m.created,
                "metrics": m.metrics,
                "kind": m.kind,
                "source": m.source,
            }
            for m in self.versions.values()
            if m.complete
        ]
        return sorted(rows, key=lambda r: (r["created"], r["version"]))

    def check(self, name: str, version: str) -> Manifest:
        """The manifest of a version that can be activated as `name`, or ValueError why not."""
        manifest = self.versions.get(version)
        if manifest is None:
            raise LookupError(
                f"no {name} version {version!r} in the registry (a version gets there when "
                "`persona models train` runs without --out, or with `persona models publish DIR` "
                "of the folder a `train --out DIR` wrote)"
            )
        if manifest.name != name:
            raise ValueError(f"{version} is a {manifest.name} model, not {name}")
        if not manifest.complete:
            raise ValueError(f"{version}'s artifact is incomplete on this worker")
        return manifest

    def check_experiment(self, experiment: Experiment) -> Manifest:
        """`check` of a new experiment's candidate, which must not be the active version (an A/B
        test of a model against itself: every difference is noise), or ValueError why not."""
        manifest = self.check(experiment.model, experiment.candidate)
        if experiment.candidate == self.active(experiment.model):
            raise ValueError(
                f"{experiment.candidate} is the active {experiment.model} version: an experiment "
                "compares it with another (train or publish one, then name that candidate)"
            )
        return manifest

    def load(self, version: str) -> Any:
        """The model object of a registered version (ChurnScorer or RecsScorer)."""
        manifest = self.versions[version]
        if manifest.source == "package":
            if manifest.name == "churn":
                return ChurnModel.load(DEFAULT_DIR / CHURN_FILE)
            return Recommender.load(DEFAULT_DIR)
        if self.cache_dir is None:
            raise ModelLoadError("this registry view keeps no artifacts")
        self._check_cached(manifest)
        model = load_model(self.cache_dir / version)
        if model.version != version:
            raise ModelLoadError(f"artifact of {version} says it is {model.version}")
        if model.name != manifest.name:  # a recs model in the churn slot failed every score
            raise ModelLoadError(
                f"artifact of {version} is a {model.name} model, not {manifest.name}"
            )
        return model

    def _check_cached(self, manifest: Manifest) -> None:
        """ModelLoadError unless every cached file of `manifest` has the digest recorded at
        publish (read again now: the cache may have changed since the fold verified it). A
        mismatch is logged and counted in `mismatched`; the version is incomplete until a chunk
        set of its digest assembles it again."""
        assert self.cache_dir is not None
        for file, info in sorted(manifest.files.items()):
            found = _digest(self.cache_dir / manifest.version / file)
            if found == info.get("sha256"):
                continue
            self.mismatched += 1
            self._verified.discard((manifest.version, file))
            manifest.complete = False
            problem = (
                f"the cached {file} of {manifest.version} does not match the digest recorded at "
                f"publish ({str(info.get('sha256'))[:16]}..., found {str(found)[:16]}...): "
                "not loaded"
            )
            log.error("%s", problem)
            raise ModelLoadError(problem)

    def unservable(self, version: str, load: Callable[[str], Any] | None = None) -> str | None:
        """Why `version` cannot be served (its artifact does not load with `load`, by default
        `self.load`), or None: checked before an activation record is written, by the CLI and
        by the HTTP route alike (a version no worker can load is refused, not listed active)."""
        try:
            (load or self.load)(version)
        except ModelLoadError as exc:
            return f"{version} cannot be served: {exc}"
        return None

    def conflict(self, bundle: Bundle) -> str | None:
        """Why `bundle` cannot be registered here, or None: its version is a shipped default's,
        or is registered already with other content (workers would hold either, by the order
        they saw them in). The same content again is fine."""
        return self._clash(bundle.version, {f: bundle.digest(f) for f in bundle.files})

    def _clash(self, version: str, digests: dict[str, Any]) -> str | None:
        """Why files with these digests cannot be registered as `version` (`conflict` at
        publish, the fold for a manifest), or None."""
        known = self.versions.get(version)
        if known is None:
            return None
        if known.source == "package":
            return f"{version} is the version of a model shipped with Persona"
        if _digests(known) != digests:
            # the first one stays: the cache's files are checked against it (chunks of other
            # content never replace a file it verified), and a worker serving it must not
            # switch content under one name
            return (
                f"{version} is registered already with other content (a version names one "
                f'artifact: remove "version" from its {META.get(known.name, "JSON file")} and '
                "publish it again to have a new version made)"
            )
        return None

    # -- the fold --------------------------------------------------------------------------------
    def apply(self, key: str, value: bytes | None) -> str | None:
        """Fold one record; returns its kind when it changed what should be served. A bad record
        (a rules document `parse_rules` refuses, say) is logged, counted in `refused` and
        skipped: what it would have replaced stays."""
        kind = key.split("/", 1)[0]
        if self.keys_of is not None and self._of_version(key, self.keys_of):
            if value is None:
                self.keys.pop(key, None)
            else:
                self.keys[key] = None
        try:
            if kind == "chunk":
                return self._chunk(key, value)
            if kind == "version" and value is not None:
                self._manifest(json.loads(value), key)
                return None
            if kind == "active" and value is not None:
                name = key.split("/", 1)[1]
                record = json.loads(value)
                if name in self.defaults and isinstance(record.get("version"), str):
                    _check_activation(record)
                    self.activations[name] = record
                    return "active"
                return None
            if kind == "experiment":
                previous = self.experiment
                self.experiment = None if value is None else Experiment.from_dict(json.loads(value))
                if self.experiment is not None:
                    self.experiments[self.experiment.name] = self.experiment
                return "experiment" if previous != self.experiment else None
            if kind == "doc":
                return self._document(key, value)
            if kind in DOCUMENTS:  # the single key of earlier versions
                return self._legacy(kind, value)
        except Exception as exc:  # anyone who can produce to the topic can write a bad record
            log.error("ignoring bad models record %r: %s: %s", key[:200], type(exc).__name__, exc)
            self.refused += 1
        return None

    @staticmethod
    def _of_version(key: str, version: str) -> bool:
        """Whether `key` is a chunk or a manifest of `version`."""
        chunk, manifest = f"chunk/{version}/", f"version/{version}"
        return key.startswith((chunk, manifest + "/")) or key == manifest

    def _parse(self, document: str, value: bytes) -> Rules | ContentExperiments:
        if document == "rules":
            return parse_rules(json.loads(value))
        return parse_experiments(json.loads(value))

    def _hold(self, document: str, found: Rules | ContentExperiments) -> str | None:
        """Serve `found` as `document`; its kind when that changed what is served."""
        if isinstance(found, Rules):
            before, self.rules = self.rules, found
            return "rules" if before != found else None
        was, self.content_experiments = self.content_experiments, found
        seen = self.content_seen
        for exp in found.experiments:
            seen.pop(exp.name, None)  # the newest: kept longest
            seen[exp.name] = exp
        while len(seen) > content.MAX_PAST:  # never the document's own: the newest
            del seen[next(iter(seen))]
        return document if was != found else None

    def _legacy(self, document: str, value: bytes | None) -> str | None:
        """A record under the single key earlier versions wrote: the last one wins, until a
        versioned record is accepted; a tombstone clears the document (versions start again)."""
        held = self.held[document]
        if value is None:
            if held.key is not None:
                held.superseded[held.key] = None
            self.held[document] = Held(superseded=held.superseded)
            return self._hold(document, NO_RULES if document == "rules" else NO_EXPERIMENTS)
        found = self._parse(document, value)
        if held.key is not None:
            self.lost += 1
            log.warning("ignoring a %s record under the key of earlier versions", document)
            return None
        held.number = document_number(found.version)
        return self._hold(document, found)

    def _document(self, key: str, value: bytes | None) -> str | None:
        """`doc/{document}/{version}/{nonce}`: accepted when its version is above the folded
        one, else ignored and counted in `lost` (another edit won); a tombstone (the winner of
        a later version clearing what it superseded) changes nothing served."""
        parts = key.split("/")
        if len(parts) != 4 or parts[1] not in DOCUMENTS or not document_number(parts[2]):
            raise ValueError("a document record's key is doc/{document}/{version}/{nonce}")
        document, version = parts[1], parts[2]
        held = self.held[document]
        if value is None:
            held.superseded.pop(key, None)
            return None
        found = self._parse(document, value)
        if found.version != version:
            raise ValueError(f"the key says version {version!r}, the document {found.version!r}")
        number = document_number(version)
        if number <= held.number:
            held.superseded[key] = None
            self.lost += 1
            log.warning(
                "ignoring %s version %s (%s): version %s was folded first (another edit won)",
                document,
                version,
                key,
                self.document_version(document),
            )
            return None
        if held.key is not None:
            held.superseded[held.key] = None
        held.number, held.key = number, key
        return self._hold(document, found)

    def _chunk(self, key: str, value: bytes | None) -> str | None:
        """Spool one chunk (the class doc); "version" when it completed a version whose manifest
        was known (what can be served changed), else None. ValueError for a chunk refused."""
        if self.cache_dir is None:
            return None
        parts = key.split("/")
        if len(parts) == 5:  # a release before publish ids
            _, version, file, i, n = parts
            publish = ""
        elif len(parts) == 6:
            _, version, publish, file, i, n = parts
            if not PUBLISH.fullmatch(publish):
                raise ValueError(f"a chunk's publish id is 16 hex digits, not {publish[:40]!r}")
        else:
            raise ValueError("a chunk's key is chunk/{version}/{publish}/{file}/{i}/{n}")
        if value is None:  # withdrawn: its publish's incomplete file goes
            dropped = self._pending.pop((version, publish, file), None)
            if dropped is not None:
                dropped.path.unlink(missing_ok=True)
            return None
        if self.only is not None and version != self.only:
            return None
        if file not in META.values() and file not in ("recs.npz", "churn.skops"):
            raise ValueError(f"unexpected artifact file {file!r}")
        if not VERSION.fullmatch(version):
            raise ValueError(f"version {version!r} cannot name an artifact folder")
        at, count = int(i), int(n)
        if not 0 <= at < count <= MAX_CHUNKS:  # [None] * 10**9 was 8 GB for one record
            raise ValueError(f"chunk {i[:20]} of {n[:20]}: at most {MAX_CHUNKS} chunks a file")
        if file in META.values() and count > MAX_JSON_CHUNKS:  # not held to be refused at load
            raise ValueError(f"{file} of {count} chunks: at most {MAX_JSON_BYTES} bytes")
        if len(value) > CHUNK_SIZE:  # it wrote over the next chunk's bytes
            raise ValueError(f"chunk {at} of {count}: {len(value)} bytes, over {CHUNK_SIZE}")
        if at < count - 1 and len(value) != CHUNK_SIZE:  # the next ones would be misplaced
            raise ValueError(f"chunk {at} of {count}: {len(value)} bytes, not the last one")
        target = self.cache_dir / version / file
        if (version, file) in self._verified:
            # verified against its manifest: never changed (the same bytes sent again are fine)
            if not _same(target, at, count, value):
                raise ValueError(
                    f"chunk {at} of {count} of {file} of {version}, other content than the "
                    "file verified against its manifest"
                )
            return None
        spool = self._pending.get((version, publish, file))
        if spool is not None and spool.count != count:
            raise ValueError(f"chunk {at} of {count} of a file sent before in {spool.count}")
        if spool is None:
            self._make_room()
            target.parent.mkdir(parents=True, exist_ok=True)
            spool = _Spool(_beside(target, publish, SPOOL), count, target)
            spool.path.unlink(missing_ok=True)  # of a set dropped before, begun again
        else:
            del self._pending[(version, publish, file)]
        self._pending[(version, publish, file)] = spool  # the most recently fed: last
        spool.write(at, value)
        if not spool.done():
            return None
        del self._pending[(version, publish, file)]
        return self._assembled(version, publish, file, spool)

    def _assembled(self, version: str, publish: str, file: str, spool: _Spool) -> str | None:
        """Put a file whose chunks have all arrived in place (the class doc). "version" when
        that completed the version."""
        assert self.cache_dir is not None
        target = self.cache_dir / version / file
        known = self.versions.get(version)
        if known is None or known.source != "registry":  # no manifest of ours judges it yet
            candidate = _beside(target, publish, NEXT)
            if not spool.spooled:  # every chunk matched the cached file: the set is it
                candidate.unlink(missing_ok=True)
            elif target.exists():  # another content than the cached one: the manifest picks
                spool.path.replace(candidate)
                _keep_newest(_candidates(target), MAX_PENDING)
            else:
                candidate.unlink(missing_ok=True)
                spool.path.replace(target)
            return None
        if not spool.spooled:  # the cached file, which the manifest did not verify: unchanged
            return None
        if _digest(spool.path) != _digests(known).get(file):
            spool.path.unlink(missing_ok=True)
            raise ValueError(
                f"{file} of {version} assembled from its chunks does not match the version's "
                "manifest: the cached file stays"
            )
        spool.path.replace(target)
        self._verified.add((version, file))
        known.complete = all((version, f) in self._verified for f in known.files)
        if not known.complete:
            return None
        log.info("model %s: artifact complete in the cache", version)
        return "version"

    def _make_room(self) -> None:
        """Drop the least recently fed incomplete files until one more fits in MAX_PENDING."""
        while len(self._pending) >= MAX_PENDING:
            (version, publish, file), spool = next(iter(self._pending.items()))
            del self._pending[(version, publish, file)]
            spool.path.unlink(missing_ok=True)
            self.dropped += 1
            log.warning(
                "model %s: dropping %s, %d of %d chunks arrived: over %d incomplete files",
                version,
                file,
                spool.arrived,
                spool.count,
                MAX_PENDING,
            )

    def _manifest(self, data: dict[str, Any], key: str) -> None:
        manifest = Manifest(
            name=str(data["name"]),
            kind=str(data["kind"]),
            version=str(data["version"]),
            created=str(data["created"]),
            metrics=_metrics(data.get("metrics")),
            files=dict(data.get("files") or {}),
            registered=str(data.get("registered", "")),
            publish=str(data.get("publish") or ""),
        )
        if not VERSION.fullmatch(manifest.version):
            raise ValueError(f"version {manifest.version[:200]!r} cannot name an artifact folder")
        if manifest.publish and not PUBLISH.fullmatch(manifest.publish):
            raise ValueError(f"a publish id is 16 hex digits, not {manifest.publish[:40]!r}")
        if key.count("/") > 1 and key != f"version/{manifest.version}/{manifest.publish}":
            raise ValueError(f"a manifest of {manifest.version} under another key than its own")
        files = KINDS.get(manifest.name, {}).get(manifest.kind)
        if files is None:
            raise ValueError(f"unknown model {manifest.name[:50]!r} of kind {manifest.kind[:50]!r}")
        if sorted(manifest.files) != sorted(files):
            raise ValueError(f"a {manifest.kind} {manifest.name} artifact is {', '.join(files)}")
        clash = self._clash(manifest.version, _digests(manifest))
        if clash:
            raise ValueError(clash)
        known = self.versions.get(manifest.version)
        if known is not None:  # the same content again: the first manifest's publish decided
            manifest.publish = known.publish
        if self.cache_dir is not None and self.only in (None, manifest.version):
            verified = self._verify(manifest)
            self._verified |= {(manifest.version, f) for f in verified}
            manifest.complete = len(verified) == len(manifest.files)
            if not manifest.complete:
                log.error("model %s: artifact missing or corrupt in the cache", manifest.version)
        self.versions[manifest.version] = manifest

    def _verify(self, manifest: Manifest) -> set[str]:
        """The files of `manifest` whose cached copy has its digest: the cached file, or else
        the one assembled since from another chunk set (`{file}.next`), which then replaces it.
        The `.next` files of the version are removed: the manifest has judged them."""
        assert self.cache_dir is not None
        folder = self.cache_dir / manifest.version
        verified = set()
        for file, info in manifest.files.items():
            target = folder / file
            if _digest(target) == info.get("sha256"):
                verified.add(file)
            for candidate in _candidates(target):
                if file not in verified and _digest(candidate) == info.get("sha256"):
                    candidate.replace(target)
                    verified.add(file)
                candidate.unlink(missing_ok=True)
        return verified


class _Spool:
    """One file being assembled: its chunks are on disk at `path`, each at its offset; memory
    holds a bit a chunk (which arrived), O(count) bits whatever the file's size.

    When the file is cached already (`target`), chunks are first compared with it: while each
    one holds the bytes the cached file has at its offset, nothing is written (a restart reads
    the topic from its start: its cached files are not written again). The first that differs
    copies the cached file to `path` (the chunks that matched are its bytes) and the spool goes
    on there (`spooled`)."""

    __slots__ = ("arrived", "count", "path", "seen", "spooled", "target")

    def __init__(self, path: Path, count: int, target: Path) -> None:
        self.path = path
        self.count = count
        self.target = target
        self.spooled = not target.exists()
        self.seen = bytearray(-(-count // 8))
        self.arrived = 0

    def write(self, at: int, value: bytes) -> None:
        if not self.spooled:
            if _same(self.target, at, self.count, value):
                self._arrived(at)
                return
            self._spool()
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            if os.pwrite(fd, value, at * CHUNK_SIZE) != len(value):
                raise OSError(f"short write to {self.path}")
            if at == self.count - 1:  # the last chunk sets the size (sent again shorter, say)
                os.ftruncate(fd, at * CHUNK_SIZE + len(value))
        finally:
            os.close(fd)
        self._arrived(at)

    def _spool(self) -> None:
        """Go on in `path`, from a copy of the cached file (or afresh when it is gone)."""
        self.spooled = True
        try:
            shutil.copyfile(self.target, self.path)
        except OSError:  # removed under us: what matched it is lost, those chunks come again
            self.path.unlink(missing_ok=True)
            self.seen = bytearray(len(self.seen))
            self.arrived = 0

    def _arrived(self, at: int) -> None:
        byte, bit = divmod(at, 8)
        if not self.seen[byte] & (1 << bit):
            self.seen[byte] |= 1 << bit
            self.arrived += 1

    def done(self) -> bool:
        return self.arrived == self.count


def _beside(target: Path, publish: str, suffix: str) -> Path:
    """The `.part` or `.next` file of one publish's set of `target`."""
    return target.with_name(f"{target.name}.{publish}{suffix}" if publish else target.name + suffix)


def _candidates(target: Path) -> list[Path]:
    """The `.next` files of `target` (any publish's), oldest first."""
    found = [*target.parent.glob(f"{target.name}.*{NEXT}"), target.with_name(target.name + NEXT)]
    stamped = []
    for path in found:
        with contextlib.suppress(OSError):
            if path.is_file() and path.name.removeprefix(target.name + ".").count(".") <= 1:
                stamped.append((path.stat().st_mtime_ns, path))
    return [path for _, path in sorted(stamped)]


def _keep_newest(paths: list[Path], keep: int) -> None:
    for path in paths[: max(0, len(paths) - keep)]:
        log.warning("removing %s: over %d chunk sets of one file wait for a manifest", path, keep)
        path.unlink(missing_ok=True)


def _same(path: Path, at: int, count: int, value: bytes) -> bool:
    """Whether the file at `path` holds `value` as chunk `at` of `count` (the last one: and
    ends with it)."""
    try:
        with path.open("rb") as f:
            if at == count - 1 and os.fstat(f.fileno()).st_size != at * CHUNK_SIZE + len(value):
                return False
            return os.pread(f.fileno(), len(value), at * CHUNK_SIZE) == value
    except OSError:
        return False


def _remove_spools(cache_dir: Path) -> None:
    """Remove the `{file}.part` files a process that died mid-assembly left in `cache_dir`, and
    the `{file}.next` files that were waiting for their version's manifest."""
    try:
        folders = list(cache_dir.iterdir())
    except OSError:  # no cache yet
        return
    for folder in folders:
        if not folder.is_dir() or folder.is_symlink():
            continue
        for part in [*folder.glob("*" + SPOOL), *folder.glob("*" + NEXT)]:
            log.info("removing %s, left by an assembly that did not finish", part)
            with contextlib.suppress(OSError):
                part.unlink()


def _check_activation(record: dict[str, Any]) -> None:
    """ValueError unless an activation's version and history (absent or a list) are versions
    (`VERSION`): a history holding an object made serving raise TypeError (`dict.fromkeys` of
    it in streams.registry._servable) and a rollback too."""
    history = record.get("history") or []
    if not isinstance(history, list):
        raise ValueError("an activation's history must be a list of versions")
    for version in [record["version"], *history]:
        if not isinstance(version, str) or not VERSION.fullmatch(version):
            raise ValueError(f"an activation names {str(version)[:60]!r}, which is no version")


def _digest(path: Path) -> str | None:
    """The file's SHA-256, read a chunk at a time (an artifact may be gigabytes: reading it
    whole held it in memory in every process that checks it), None when it cannot be read."""
    try:
        with path.open("rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return None


def _digests(manifest: Manifest) -> dict[str, Any]:
    return {f: info.get("sha256") for f, info in manifest.files.items()}
