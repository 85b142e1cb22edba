"""`persona models ...`: train, evaluate, publish, list, activate, roll back, A/B, report."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.events import InvalidEvent
from engine.files import require_regular
from engine.settings import (
    EMBEDDED_SECRET_FILE,
    Settings,
    SettingsError,
    load_settings,
    with_cluster_secret_file,
)
from engine.signing import ClusterKey
from models.artifacts import ModelLoadError
from streams.kafka_security import KafkaClientConfig, client_config
from streams.signed import RecordSigner, cli_signer

if TYPE_CHECKING:
    from engine.sources import ReadStats

EPILOG = """examples:
  persona models train recs --events events.jsonl --broker kafka://127.0.0.1:9092
  persona models train recs --lambda 500 --events events.jsonl   # pin EASE's lambda (default auto)
  persona models list --broker kafka://127.0.0.1:9092
  persona models activate recs recs-20261122T0800-1a2b3c4d
  persona models rollback recs
  persona models publish my-churn-model/   # churn.json (+ churn.skops), or recs.json + recs.npz
  persona models train recs --kind als --events events.jsonl   # embedding table (needs implicit)
  persona models evaluate --events ../shared/data/uci_online_retail/online_retail.csv.gz
  persona models experiment start recs-test --model recs --candidate recs-2026... [--shadow]
  persona models report recs-test --share 0.5   # --share: the check of the split
"""

TRAIN_KINDS = {"churn": ("logistic", "gbm"), "recs": ("knn", "als")}  # the first is the default
AUTO = "auto"  # models.ease_table.AUTO: --lambda's default, the lambda searched for in training


def ease_lambda(text: str) -> Any:
    """`--lambda`: "auto" or a number (models.ease_table.parse_lambda), else argparse's error."""
    from models.ease_table import parse_lambda

    try:
        return parse_lambda(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def variant_share(text: str) -> float:
    """`--share` (experiment start, report): the experiment's fraction of users in variant B, a
    fraction strictly between 0 and 1 (0.3) or a percentage strictly between 0 and 100 (30%),
    models.experiments.Experiment's bound, else argparse's error naming the value given."""
    stripped = text.strip()
    percent = stripped.endswith("%")
    try:
        share = float(stripped.removesuffix("%")) / (100.0 if percent else 1.0)
    except ValueError:
        share = math.nan
    if not 0.0 < share < 1.0:  # nan fails too
        raise argparse.ArgumentTypeError(
            f"{text[:40]!r}: the share of variant B is a fraction between 0 and 1 (exclusive, "
            "e.g. 0.3) or a percentage between 0 and 100 % (exclusive, e.g. 30%)"
        )
    return share


def _cluster(args: argparse.Namespace) -> ClusterKey:
    """The cluster secret's key: the registry's records are signed and verified with it. With
    none set, the embedded default's `<data dir>/cluster-secret` when `persona run` made one
    (checked as PERSONA_CLUSTER_SECRET_FILE is; its path said on stderr, never the secret)."""
    settings = load_settings({"broker_url": args.broker})
    secret = settings.cluster_secret
    kept = settings.data_dir / EMBEDDED_SECRET_FILE
    if secret is None and kept.is_file():
        secret = with_cluster_secret_file(settings, kept).cluster_secret
        print(
            f"persona: the cluster secret of {kept} (`persona run`'s embedded default; "
            "PERSONA_CLUSTER_SECRET or PERSONA_CLUSTER_SECRET_FILE set another)",
            file=sys.stderr,
        )
    if secret is None:
        raise SettingsError(
            "PERSONA_CLUSTER_SECRET (or PERSONA_CLUSTER_SECRET_FILE) is not set: the model "
            "registry's records are signed with the secret the workers share (`persona run` "
            "keeps the embedded default's in <data dir>/cluster-secret)"
        )
    return ClusterKey(secret)


def _signer(args: argparse.Namespace) -> RecordSigner:
    return RecordSigner(_cluster(args), cli_signer())


def _broker(args: argparse.Namespace) -> KafkaClientConfig:
    """The configured cluster with its security (PERSONA_KAFKA_*), checked for TLS."""
    settings: Settings = load_settings({"broker_url": args.broker})
    if settings.broker_url is None:
        raise SettingsError(
            "no broker: pass --broker kafka://host:port or set PERSONA_BROKER_URL "
            "(`persona run` prints the URL of its embedded broker)"
        )
    return client_config(settings, settings.broker_url)


def _events(path: str) -> list[Any]:
    from engine.profile import is_reversal
    from engine.sources import ReadStats, read_events

    require_regular(path)
    from persona.progress import track

    stats = ReadStats()
    # history of any era (a 1997 file trains); live events keep 2000..2100 (engine.events)
    read = track(read_events(path, stats=stats, history=True), f"reading {Path(path).name}")
    events = [e for e in read if not is_reversal(e)]  # models learn from what was bought
    print(f"read {len(events)} events ({stats.format})", file=sys.stderr)
    return events


SKIP_WORDS = {"guest": "guest orders (no CustomerID)"}  # ReadStats.skipped's reasons, said


def _require_events(path: str, purpose: str = "train on") -> None:
    """A file of no event (empty, a header alone, every row skipped) is said naming it, the
    format read (none for an empty file: `evaluate` said "read 0 events (jsonl)" of an empty
    .csv) and what was read, before any training or evaluation: each model said only `no item
    signals to train on` or `no events to train on`. Reads up to the first event: a file with
    events costs a line."""
    from engine.sources import ReadStats, read_events

    stats = ReadStats()
    if next(iter(read_events(path, stats=stats, history=True)), None) is not None:
        return
    raise ValueError(f"{path}: no events to {purpose} ({what_was_read(path, stats)})")


def what_was_read(path: str, stats: ReadStats) -> str:
    """What a file of no event held: `an empty file`, or the format read, its data rows and
    those skipped (`uci, 3 data rows, skipped: 3 guest orders (no CustomerID)`)."""
    skipped = ", ".join(f"{n:,} {SKIP_WORDS.get(why, why)}" for why, n in stats.skipped.items())
    read = f"{stats.format}, {stats.rows:,} data row{'' if stats.rows == 1 else 's'}"
    if Path(path).stat().st_size == 0:
        read = "an empty file"
    elif skipped:
        read += f", skipped: {skipped}"
    return read


def _publish(broker: KafkaClientConfig, directory: Path, signer: RecordSigner) -> str:
    from models.bundle import read_bundle
    from persona.progress import Progress
    from streams.registry import publish

    bundle = read_bundle(directory)
    progress = Progress(f"publish {bundle.version}")
    n = asyncio.run(publish(broker, bundle, signer, progress))
    progress.close(n)
    return bundle.version


def _check_out(args: argparse.Namespace) -> None:
    """A `--out` that cannot take the artifacts is said before training (minutes on a big
    file), not after: a path through a file, a folder that cannot be written, or a model's
    folder holding files of the user's own (save_model never removes those)."""
    from models.bundle import check_out, check_writable

    if not args.out:
        return
    if args.model == "all":  # churn.json, recs.json and recs.npz written into `out` itself
        check_writable(args.out)
    else:
        check_out(Path(args.out) / args.model, args.model)


def cmd_train(args: argparse.Namespace) -> int:
    from models.bundle import save_model
    from persona.progress import step

    if args.ease_lambda != AUTO and (args.model == "churn" or args.kind == "als"):
        raise ValueError("--lambda sets the EASE neighbour table of recs (--kind knn)")
    _check_out(args)
    require_regular(args.events)
    _require_events(args.events)
    if args.out and args.model == "all":  # the original form: both models into one directory
        from models.train import train_all

        summary = train_all(
            Path(args.events), Path(args.out), horizon_days=args.horizon_days, lam=args.ease_lambda
        )
        for name, info in summary.items():
            print(f"{name}: {info}")
        return 0
    broker = None if args.out else _broker(args)
    signer = None if args.out else _signer(args)  # before training: a missing secret says so
    names = ("churn", "recs") if args.model == "all" else (args.model,)
    for name in names:
        model: Any
        with step(f"training {name}"):
            if args.model != "all" and args.kind not in (None, *TRAIN_KINDS[name]):
                raise ValueError(f"--kind {args.kind} does not train a {name} model")
            model = _trained(name, args)
        print(f"{name} {model.version}: {json.dumps(model.metrics)}")
        if args.out:
            save_model(model, Path(args.out) / name)
            print(f"wrote {Path(args.out) / name}")
            continue
        with tempfile.TemporaryDirectory() as tmp:
            save_model(model, Path(tmp) / name)
            assert broker is not None and signer is not None
            _publish(broker, Path(tmp) / name, signer)
        print(f"registered {model.version} (not active: persona models activate {name} ...)")
    return 0


def _trained(name: str, args: argparse.Namespace) -> Any:
    """One model from the events file. Churn and the item-kNN recs read the file in streaming
    passes into compact arrays, never a list of every event (issue 21 item 4:
    models/churn_stream.py, models/recs_stream.py); ALS reads the events into a list."""
    from engine.sources import UCI_NON_PRODUCT_CODES

    if name == "churn":
        from models.churn import train_churn_on
        from models.churn_stream import churn_dataset_file
        from models.sklearn_churn import train_gbm_churn_on

        data = churn_dataset_file(args.events, args.horizon_days)
        train = train_gbm_churn_on if args.kind == "gbm" else train_churn_on
        return train(data, args.horizon_days)
    if args.kind == "als":  # item factors of implicit-ALS (optional package)
        from models.embedding import train_als_recs

        return train_als_recs(_events(args.events), ignore=UCI_NON_PRODUCT_CODES)
    from models.recs_stream import train_recs_file

    return train_recs_file(args.events, ignore=UCI_NON_PRODUCT_CODES, lam=args.ease_lambda)


def cmd_publish(args: argparse.Namespace) -> int:
    version = _publish(_broker(args), Path(args.path), _signer(args))
    print(f"registered {version} (not active)")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from streams.registry import read_registry

    state = asyncio.run(read_registry(_broker(args), _cluster(args)))
    if args.json:
        print(json.dumps({"models": state.listing()}, indent=1))
        return 0
    print(f"{'name':6} {'active':6} {'version':34} {'created':21} metrics")
    for row in state.listing():
        metrics = {k: v for k, v in row["metrics"].items() if isinstance(v, int | float)}
        flag = "*" if row["active"] else ""
        print(f"{row['name']:6} {flag:6} {row['version']:34} {row['created']:21} {metrics}")
    if state.experiment:
        print(f"experiment: {json.dumps(state.experiment.to_dict())}")
    return 0


def _switch(args: argparse.Namespace, version: str | None) -> int:
    """Write the activation record of `version` (None: roll back) once the version's artifact,
    read back from the registry, loads here: a version no worker can load is refused before
    any record is written (as POST /v1/models/{name}/activate answers 409). Workers would keep
    serving the previous version (streams.registry `_servable`), but the registry would list
    the refused one active."""
    from streams.registry import activation, read_registry, write_records

    broker, signer = _broker(args), _signer(args)
    with tempfile.TemporaryDirectory(prefix="persona-activate-") as tmp:
        # an activation assembles only its version's artifact; a rollback's target is known
        # only once the registry is read, so it assembles every version's
        state = asyncio.run(read_registry(broker, signer.key, Path(tmp), only=version))
        record = activation(state, args.name, version)
        active = json.loads(record[1] or b"{}")["version"]
        refused = state.unservable(active)
        if refused is not None:
            raise ModelLoadError(refused)
    asyncio.run(write_records(broker, [record], signer))
    print(f"{args.name}: {active} is active (workers switch within seconds)")
    return 0


def cmd_activate(args: argparse.Namespace) -> int:
    return _switch(args, args.version)


def cmd_rollback(args: argparse.Namespace) -> int:
    return _switch(args, None)


def cmd_experiment(args: argparse.Namespace) -> int:
    from models.artifacts import rfc3339, utc_now
    from models.experiments import Experiment
    from models.registry_log import experiment_record
    from streams.registry import read_registry, write_records

    if args.action == "start":  # said before any broker is asked
        from engine.content_experiments import NAME_RULE, valid_name

        if not valid_name(args.experiment):
            raise ValueError(f"experiment start NAME: the name is {NAME_RULE}")
        if not args.candidate:
            raise ValueError("experiment start: --candidate names the version under test")
    broker, signer = _broker(args), _signer(args)
    experiment = running = None
    if args.action == "stop":
        running = asyncio.run(read_registry(broker, signer.key)).experiment
        if running is None and not args.experiment:  # nothing to stop: said, nothing written
            print("experiment: no experiment is running (nothing to stop)")
            return 0
    # a name stops that one only, not any
    if (
        args.action == "stop"
        and args.experiment
        and (running is None or running.name != args.experiment)
    ):
        now = f"{running.name!r} is running" if running else "none is running"
        raise ValueError(
            f"experiment stop: {args.experiment!r} is not running ({now}; `persona models "
            "experiment stop` without a name stops the running one)"
        )
    if args.action == "start":
        state = asyncio.run(read_registry(broker, signer.key))
        experiment = Experiment(
            name=args.experiment,
            model=args.model,
            control=state.active(args.model),
            candidate=args.candidate,
            mode="shadow" if args.shadow else "ab",
            share=args.share,
            started=rfc3339(utc_now()),
        )
        state.check_experiment(experiment)
    asyncio.run(write_records(broker, [experiment_record(experiment)], signer))
    if experiment is not None:
        print(f"experiment: {json.dumps(experiment.to_dict())}")
    else:
        print(f"experiment: stopped {running.name!r}" if running else "experiment: stopped")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """The report; a name with no exposure logged that no experiment was started with (a typo)
    is an error naming the experiments there are (LookupError: exit 2), as the HTTP route's 404:
    it printed a report of zeros and exited 0."""
    from models.experiments import exposures_of, unknown_experiment
    from streams.registry import experiment_report, read_registry

    broker = _broker(args)
    result = asyncio.run(experiment_report(broker, args.experiment, args.share))
    if not exposures_of(result):  # started with nobody exposed yet, or no such experiment
        try:
            key = _cluster(args)
        except SettingsError as exc:
            raise LookupError(
                f"no exposure is logged for an experiment {args.experiment[:64]!r}, and the "
                f"registry cannot tell whether it was started: {exc}"
            ) from None
        started = asyncio.run(read_registry(broker, key)).experiments
        if args.experiment not in started:
            raise LookupError(unknown_experiment(args.experiment, started))
    print(json.dumps(result, indent=1))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from engine.sources import UCI_NON_PRODUCT_CODES
    from models.evaluate import evaluate_churn, evaluate_recs, markdown
    from persona.progress import step

    require_regular(args.events)
    _require_events(args.events, "evaluate")
    events = _events(args.events)
    recs: list[dict[str, Any]] | None = None
    churn = None
    skipped: dict[str, str] = {}
    if args.model in ("all", "recs"):
        recs = []
        for protocol in ("last-n", "time") if args.protocol == "both" else (args.protocol,):
            try:
                with step(f"evaluating recommendations ({protocol})"):
                    recs.append(
                        evaluate_recs(
                            events,
                            protocol,
                            UCI_NON_PRODUCT_CODES,
                            n=args.holdout,
                            test_days=args.test_days,
                            max_users=args.max_users,
                        )
                    )
            except ValueError as exc:
                if args.protocol != "both" or protocol != "time":
                    raise
                # both splits asked: the leave-last-N one still prints (--test-days past the
                # events' span: models.evaluate)
                skipped["recs (time split)"] = str(exc)
                print(f"persona: time split not evaluated: {exc}", file=sys.stderr)
    if args.model in ("all", "churn"):
        try:
            with step("evaluating churn"):
                churn = evaluate_churn(events, args.horizon_days)
        except ValueError as exc:
            if args.model == "churn":
                raise
            # the default form: the recommendations' tables (minutes on a big file) still print
            skipped["churn"] = str(exc)
            print(f"persona: churn not evaluated: {exc}", file=sys.stderr)
    if args.json:
        print(json.dumps({"recs": recs, "churn": churn, "not_evaluated": skipped}, indent=1))
    else:
        print(markdown(recs, churn), end="")
        for name, why in skipped.items():
            shown = "Recommendations (time split)" if name.startswith("recs") else name.capitalize()
            print(f"\n{shown}: not evaluated: {why}")
    return 0


def _guarded(func: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            return int(func(args))
        except ModelLoadError as exc:
            print(f"persona: refused: {exc}", file=sys.stderr)
            return 2
        except InvalidEvent as exc:  # a line of the events file (train, evaluate): its name
            # the file's name in front of an error from reading it (read_events), not of
            # another, nor of one that names it already (detect_format's "PATH: unknown ...")
            named = exc.file is None or exc.reason.startswith(f"{exc.file}: ")
            where = "" if named else f"{exc.file}: "
            print(f"persona: {where}{exc.reason}", file=sys.stderr)
            return 2
        except (LookupError, ValueError, ImportError) as exc:
            print(f"persona: {exc}", file=sys.stderr)
            return 2

    return run


def add_models_parser(sub: Any) -> None:
    """`persona models ...` under the main parser's subcommands."""
    raw = argparse.RawDescriptionHelpFormatter
    models = sub.add_parser("models", help="train and manage models", epilog=EPILOG)
    models.formatter_class = raw
    msub = models.add_subparsers(dest="models_command", required=True)

    def command(name: str, func: Any, help: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = msub.add_parser(
            name, help=help, epilog=EPILOG, formatter_class=raw
        )
        p.add_argument("--broker", help="kafka://host:port (or PERSONA_BROKER_URL)")
        p.set_defaults(func=_guarded(func))
        return p

    train = command("train", cmd_train, "train a model and register it as a new, inactive version")
    train.add_argument("model", nargs="?", choices=("churn", "recs", "all"), default="all")
    train.add_argument("--events", required=True, help="events file (any `replay` format)")
    train.add_argument("--horizon-days", type=int, default=90, help="churn horizon (days)")
    train.add_argument(
        "--kind",
        choices=(*TRAIN_KINDS["churn"], *TRAIN_KINDS["recs"]),
        help="churn: logistic (default) or gbm; recs: the item-neighbour table (default) or als "
        "(an embedding table of implicit-ALS item factors; needs `pip install implicit`)",
    )
    train.add_argument("--out", help="write the artifacts to this directory instead")
    train.add_argument(
        "--lambda",
        dest="ease_lambda",
        type=ease_lambda,
        default=AUTO,
        metavar="auto|NUMBER",
        help="recs: the EASE table's regularization. auto (the default): the value of 100, 300, "
        "500, 1000 with the best HR@10 when each user's last 5 distinct items of the events are "
        "held out (models/ease_search.py; below 50 such users, 100); a number pins it",
    )

    publish = command("publish", cmd_publish, "register an artifact trained elsewhere")
    publish.add_argument("path", help="directory with churn.json (+ churn.skops) or recs.*")

    lst = command("list", cmd_list, "every registered version, oldest first (* = active)")
    lst.add_argument("--json", action="store_true")

    act = command("activate", cmd_activate, "make a version active on every worker")
    act.add_argument("name", choices=("churn", "recs"))
    act.add_argument("version")
    rb = command("rollback", cmd_rollback, "back to the previously active version")
    rb.add_argument("name", choices=("churn", "recs"))

    exp = command("experiment", cmd_experiment, "start or stop an A/B test or shadow run")
    exp.add_argument("action", choices=("start", "stop"))
    exp.add_argument(
        "experiment",
        nargs="?",
        default="",
        help="experiment name (start; with stop: that one only)",
    )
    exp.add_argument("--model", choices=("churn", "recs"), default="recs")
    exp.add_argument("--candidate", help="the version under test (start)")
    exp.add_argument("--shadow", action="store_true", help="score the candidate without showing")
    exp.add_argument(
        "--share",
        type=variant_share,
        default=0.5,
        metavar="F",
        help="the fraction of users in variant B: 0 < F < 1 (0.3) or a percentage (30%%); "
        "default 0.5",
    )

    rep = command("report", cmd_report, "per-variant exposures, conversions and difference")
    rep.add_argument("experiment")
    rep.add_argument(
        "--share",
        type=variant_share,
        metavar="F",
        help="the experiment's fraction of users in variant B (0 < F < 1, or a percentage "
        "such as 30%%): adds the "
        "sample-ratio-mismatch check of users per arm, as the HTTP report does (without it, "
        "sample_ratio is null)",
    )

    ev = command("evaluate", cmd_evaluate, "offline evaluation against the simple peers")
    ev.add_argument("--events", required=True, help="events file (any `replay` format)")
    ev.add_argument("model", nargs="?", choices=("churn", "recs", "all"), default="all")
    ev.add_argument("--horizon-days", type=int, default=90)
    ev.add_argument(
        "--protocol",
        choices=("last-n", "time", "both"),
        default="both",
        help="recs: each user's last --holdout distinct items held out, the last --test-days "
        "days held out, or both (models/evaluate.py)",
    )
    ev.add_argument("--holdout", type=int, default=5, help="recs: items held out per user")
    ev.add_argument("--test-days", type=int, default=30, help="recs: days held out at the end")
    ev.add_argument("--max-users", type=int, help="recs: evaluate at most this many users")
    ev.add_argument("--json", action="store_true")
