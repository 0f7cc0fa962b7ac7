"""`agecheck` command line: parses arguments, loads the config once, sets up logging and hands
over to the module that owns each job. Config problems print one line and exit with code 2."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from edge_app import __version__, nativelog
from edge_app.config import Config, ConfigError
from edge_app.config.files import CONFIG_ENV, SYSTEM_CONFIG, load, locate
from edge_app.errors import AgecheckError

# The till's camera, vision and model stack: what a manager-only install leaves out.
TILL_LIBRARIES = frozenset({"mediapipe", "cv2", "ai_edge_litert", "numpy", "matplotlib", "PIL", "sdnotify"})


def setup_logging(cfg: Config) -> None:
    logging.basicConfig(
        level=getattr(logging, cfg.logging.level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )


def cmd_faces(args: argparse.Namespace, cfg: Config) -> int:
    # Deferred, as every command's program: a command loads only its own (cv2, mediapipe, Tk...).
    from edge_app.devtools.photos import run_faces

    return run_faces(args, cfg)


def cmd_estimate(args: argparse.Namespace, cfg: Config) -> int:
    from edge_app.devtools.photos import run_estimate  # deferred: see cmd_faces

    return run_estimate(args, cfg)


def cmd_run(args: argparse.Namespace, cfg: Config) -> int:
    # The demo wraps the service (its own broker, video and POS), so the command line picks one.
    if args.demo:
        # Deferred (see cmd_faces), and in this order: mediapipe first, with TensorFlow hidden,
        # before the demo's imports could load it the slow way.
        from edge_app.vision.mediapipe_import import import_mediapipe

        import_mediapipe(hide_tensorflow=True)
        from edge_app.devtools import demo

        return demo.main(args, cfg)
    from edge_app.till import service  # deferred: see cmd_faces

    plugins = []
    if cfg.display.enabled:
        # Deferred: only a till with a screen needs the window's modules.
        from edge_app.cashier.isolated import attach

        plugins.append(attach)
    return service.main(args, cfg, plugins)


def cmd_feed(args: argparse.Namespace, cfg: Config) -> int:
    if args.copy_from:
        from edge_app.manager import copy

        return copy.run(args.copy_from, args.db or cfg.feed.db_path, cfg.feed.max_payload_bytes)
    from edge_app.manager import feed

    return feed.main(args, cfg)


def _delegate(module: str):
    def run(args: argparse.Namespace, cfg: Config) -> int:
        return importlib.import_module(module).main(args, cfg)

    return run


def _manager_commands(sub, common) -> None:
    """feed, report and dashboard: the manager's side."""
    p = sub.add_parser("feed", help="store manager: subscribe to the event feed, store and show it live")
    p.add_argument(
        "--db", default=None, help="where to store events: a SQLite file, or a postgresql:// URL (default from config)"
    )
    p.add_argument("--all-stores", action="store_true", help="subscribe to every store, not only this one")
    p.add_argument(
        "--copy-from",
        default=None,
        metavar="STORE",
        help="instead of subscribing: copy every event of this store (a SQLite file, or a "
        "postgresql:// URL) into --db, check the counts and exit; safe to run again",
    )
    common(p)  # it only reads
    p.set_defaults(func=cmd_feed)

    p = sub.add_parser("report", help="store manager: per-till, per-day report from the stored feed")
    p.add_argument("--since", default=None, help="start date (YYYY-MM-DD), inclusive")
    p.add_argument("--until", default=None, help="end date (YYYY-MM-DD), inclusive")
    p.add_argument("--db", default=None, help="the feed's store: SQLite file or postgresql:// URL")
    p.add_argument("--store", default=None, help="only this store (default: every store in the database)")
    # The dashboard's filters, with the same meaning (edge_app.manager.scope).
    p.add_argument("--till", default=None, help="only this till's events")
    p.add_argument("--cashier", default=None, help="only the events of this cashier (who was logged in at the alert)")
    p.add_argument(
        "--from-time",
        default=None,
        metavar="HH:MM",
        help="only events from this time of day on, each day (with --to-time before it: over midnight)",
    )
    p.add_argument("--to-time", default=None, metavar="HH:MM", help="only events before this time of day, each day")
    p.add_argument(
        "--out",
        default=None,
        help="folder for report.md, report.html, report.json, per_till.csv, per_cashier.csv and the "
        "charts (default agecheck-report; with --json, written only when given)",
    )
    p.add_argument(
        "--json",
        nargs="?",
        const="-",
        default=None,
        metavar="FILE",
        help="write report.json's content to FILE (or print it: no FILE, or -) instead of the folder",
    )
    common(p)
    p.set_defaults(func=_delegate("edge_app.manager.report"))

    p = sub.add_parser("dashboard", help="store manager / head office: web dashboard over the feed's store")
    p.add_argument(
        "--db", default=None, help="the feed's store: SQLite file or postgresql:// URL (default from config)"
    )
    p.add_argument("--host", default=None, help="address to listen on (default dashboard.host, 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default dashboard.port, 8050; 0 = any free port)")
    p.add_argument(
        "--hash-password",
        action="store_true",
        help="read a password (prompt or stdin) and print the hash for dashboard.password_hash",
    )
    common(p)
    p.set_defaults(func=_delegate("edge_app.manager.dashboard"))


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="agecheck", description="Checkout-camera age check (Challenge 25) for tills.")
    ap.add_argument("--version", action="version", version=f"agecheck {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")

    def common(p: argparse.ArgumentParser, defaults_ok: bool = True) -> None:
        # Built-in defaults are only safe where a wrong store/till id or broker cannot publish
        # anything in a store's name: the service and the cashier window need a real config.
        fallback = "then the built-in defaults" if defaults_ok else "one of them is required"
        p.add_argument(
            "--config", default=None, help=f"config.yaml (default: ${CONFIG_ENV}, then {SYSTEM_CONFIG}, {fallback})"
        )
        p.set_defaults(defaults_ok=defaults_ok)

    p = sub.add_parser("faces", help="find, choose, align and quality-check the face(s) in photos")
    p.add_argument("photos", nargs="+", metavar="PHOTO")
    p.add_argument(
        "--save-crop",
        metavar="PATH",
        help="write the aligned crop here (a file for one photo, a folder for several); never by default",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    common(p)
    p.set_defaults(func=cmd_faces)

    p = sub.add_parser("estimate", help="age, band and policy decision for the face in each photo")
    p.add_argument("photos", nargs="+", metavar="PHOTO")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--model", default=None, help="a .tflite model instead of model.path from the config")
    common(p)
    p.set_defaults(func=cmd_estimate)

    p = sub.add_parser("run", help="run the till service (camera, POS trigger, checks, MQTT events)")
    p.add_argument(
        "--demo", action="store_true", help="self-contained demo: own loopback broker, sample video, simulated POS"
    )
    common(p, defaults_ok=False)  # except with --demo (its own broker): see main()
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("display", help="cashier alert window as its own process (subscribes to the local broker)")
    p.add_argument(
        "--password-file",
        default=None,
        metavar="PATH",
        help="broker password for the window (instead of display.mqtt_password_file)",
    )
    common(p, defaults_ok=False)
    p.set_defaults(func=_delegate("edge_app.cashier.standalone"))

    _manager_commands(sub, common)

    p = sub.add_parser("bench", help="measure per-stage speed, latency, CPU and memory")
    p.add_argument(
        "--frames",
        type=int,
        default=300,
        help="frames for the per-stage figures (default 300; the other parts scale with it)",
    )
    p.add_argument("--images", default=None, help="folder of face photos instead of the sample photo")
    p.add_argument(
        "--float-model",
        default=None,
        help="float32 .tflite of the same model to compare (default: beside the int8 one)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    common(p)
    p.set_defaults(func=_delegate("edge_app.devtools.bench"))
    return ap


def main(argv: list[str] | None = None, filter_native: bool = True) -> int:
    """The `agecheck` program. `filter_native` puts edge_app.nativelog in front of fd 2, which is
    right for a process of its own and wrong for a caller that shares its stderr (pass False)."""
    ap = build_parser()
    args = ap.parse_args(argv)
    if not getattr(args, "func", None):
        ap.print_help()
        return 2
    try:
        # Resolved once here and put back in args, so a worker process started by a command
        # (the bench's) reads the same file.
        found = locate(args.config, args.defaults_ok or bool(getattr(args, "demo", False)))
        args.config = None if found is None else str(found)
        cfg = load(found)
    except ConfigError as exc:
        return _fail(exc, args.command)
    if filter_native:
        # Before any command imports OpenCV, MediaPipe or TFLite.
        nativelog.install(show_noise=cfg.logging.level == "DEBUG")
    setup_logging(cfg)
    try:
        return int(args.func(args, cfg) or 0)
    except AgecheckError as exc:
        return _fail(exc, args.command)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in TILL_LIBRARIES:
            raise
        # A manager-only install (requirements/manager.in) asked for a till's command.
        print(
            f"agecheck {args.command}: needs the till's libraries ({exc.name} is not installed); this looks "
            "like a manager-only install, which has feed, report and dashboard. Install agecheck with its "
            "dependencies (pip install agecheck, or the Debian package) for this command.",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        return 130


def _fail(exc: AgecheckError, command: str | None) -> int:
    """The one place an error becomes a message and an exit status."""
    if isinstance(exc, ConfigError):
        print(f"agecheck: config error: {exc}", file=sys.stderr)
    else:
        print(f"agecheck {command}: {exc}", file=sys.stderr)
    return exc.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
