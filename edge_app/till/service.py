"""Service: `agecheck run`. Wires capture -> triggers -> check -> outbox -> MQTT, feeds the systemd
watchdog from the loops that must keep moving, and shuts down cleanly on SIGTERM/Ctrl-C
(publishing `offline`). `agecheck run --demo` is the command line's: edge_app.devtools.demo.

Plug-ins and listeners (the cashier display, the integrity monitor) meet the service through the
Protocols of edge_app.till.plugins: `listen(listener)` and the `plugins` factories.

* `service.publish_event(event)` - the one way to send an event: takes a typed event (validated
  when it was built), has the outbox number, encode and store it (durable before it is
  published), wakes the MQTT sender, then tells the listeners. Raises SchemaError for anything
  that is not a typed event. When the outbox cannot write (disk full) the event is held in memory
  by the OutboxWriter and written when it can again; listeners are told all the same (the check
  was answered on screen), and `state` says `degraded: true` meanwhile.
* `service.submit(scan, source, ack=None)` - start a check for a scan (what the MQTT, HTTP and stdin
  triggers call); returns a Submission whose `result` future resolves to the CheckOutcome. `ack`
  (the MQTT trigger's) is called once the scan's record - its check or its `missed` event - is
  stored: a `pos/scan` is acknowledged to the broker then, not on arrival, so a crash before it
  leaves the scan with the broker, which delivers it again after the restart.
* The integrity monitor is attached here; the `plugins` factories (the command line gives the
  cashier window's `attach` when `display.enabled` is true: the till does not import the
  cashier's package) are called once at start.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TextIO

from edge_app import __version__
from edge_app.config import Config, ConfigError
from edge_app.config.files import require_model_file
from edge_app.core import event_bounds, events, topics
from edge_app.core.pos import Sale, Scan
from edge_app.core.state import HEARTBEAT_S, LastCheck, Recording, TillState
from edge_app.core.times import now_iso
from edge_app.core.words import DECISION_SHORT, MissedReason
from edge_app.stopping import stop_on_signals
from edge_app.till.broker_link import till_link
from edge_app.till.capture import Capture
from edge_app.till.check import CheckOutcome, CheckRunner, load_model, model_threads, require_model_crops
from edge_app.till.http_trigger import HttpTrigger, start_http_trigger
from edge_app.till.inbound import Count, CountedWarnings, Inbound
from edge_app.till.intake import Intake
from edge_app.till.integrity import IntegrityMonitor, IntegrityTracker
from edge_app.till.plugins import PluginFactory, ServiceListener
from edge_app.till.sd_notify import Notifier, WatchdogFeeder
from edge_app.till.triggers import (
    StdinTrigger,
    Submission,
)
from edge_app.transport.outbox import Outbox
from edge_app.transport.outbox_file import OutboxError
from edge_app.transport.outbox_writer import OutboxWriter
from edge_app.vision.faces import FacePipeline
from edge_app.vision.mediapipe_import import import_mediapipe
from edge_app.vision.model import AgeModel

log = logging.getLogger(__name__)


STATE_EVERY_S = HEARTBEAT_S  # the retained state is refreshed this often (outbox depth) besides on changes


def _tenths(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 1)


class Service:
    def __init__(
        self,
        cfg: Config,
        *,
        pipeline: FacePipeline | None = None,
        model: AgeModel | None = None,
        notifier: Notifier | None = None,
        stdin: TextIO | None = None,
        plugins: Sequence[PluginFactory] = (),
    ):
        self.cfg = cfg
        self.notifier = notifier or Notifier()
        self._stdin = stdin if stdin is not None else sys.stdin
        # The outbox first: it is the cheapest to open and the likeliest to be misconfigured, and
        # a refusal then comes before the model and MediaPipe have printed anything.
        try:
            self.outbox = Outbox(cfg.outbox.path, cfg.outbox.max_events)
        except OutboxError as exc:
            raise ConfigError(f"outbox.path: {exc}") from None
        self._own_pipeline = pipeline is None
        try:
            if model is None:
                require_model_file(cfg)
                # check.parallel: the model keeps off the core the next frame's face look uses.
                model = load_model(cfg.model.path, model_threads(cfg), cfg.faces.output_size)
            else:
                require_model_crops(model, cfg.faces.output_size)
            self.model = model
            self.pipeline = pipeline or FacePipeline(cfg.faces)
        except BaseException:
            self.outbox.close()
            raise
        self.counts: Counter[Count] = Counter()
        self.intake = Intake(cfg, self.counts, self.publish_event, lambda: self.link.publish_state())
        self.inbound = Inbound(
            cfg.triggers.max_payload_bytes,
            self.counts,
            CountedWarnings(log),
            submit=self.submit,
            on_sale=self._on_sale,
            on_ack=self._on_remote_ack,
        )
        self.quarantine_log = self.inbound.log
        try:
            self.link = till_link(
                cfg,
                self.outbox,
                lambda m: self.inbound.on_message(m.leaf, m.payload, m.ack),
                lambda: self.state().encode(),
            )
        except ConfigError:
            self.outbox.close()
            self._close_pipeline()
            raise
        self.capture = Capture(cfg.camera, on_status=self._on_camera)
        self.checker = CheckRunner(
            cfg, self.capture.buffer, self.pipeline, self.model, camera_status=lambda: self.capture.status
        )
        self._listeners: list[ServiceListener] = []
        self._plugins = tuple(plugins)
        # Every event goes through the writer: on a full disk it holds events in memory instead
        # of losing what the cashier was already shown.
        self.writer = OutboxWriter(self.outbox, cfg.outbox.memory_max_events, on_change=self._on_recording)
        self.published: Counter[str] = Counter()  # events by kind
        self.last_check: LastCheck | None = None
        self.started_ts = now_iso()
        self.worker_heartbeat = time.monotonic()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._closers: list[Callable[[], object]] = []
        self.http: HttpTrigger | None = None
        self._full_reported = False
        self._stopped = False

    def listen(self, listener: ServiceListener) -> None:
        """Tell `listener` what the service publishes and hears (edge_app.till.plugins says what
        and on which threads); its on_recording hears the current `Recording` at once."""
        self._listeners.append(listener)
        self._tell(lambda one: one.on_recording(self._recording()), "recording", [listener])

    def _close_pipeline(self) -> None:
        if self._own_pipeline:
            self.pipeline.close()

    # -- hooks -----------------------------------------------------------------------------------
    def publish_event(self, event: events.Event) -> None:
        if not isinstance(event, events.Event):
            # A plug-in handing a bare dict is a bug: refused before anything is stored.
            raise event_bounds.SchemaError(
                f"publish_event takes a typed event (edge_app.core.events), not {type(event).__name__}"
            )
        self._tell(lambda one: one.on_publishing(event), events.describe(event))
        # Numbered by the outbox (publisher = this till) so the feed can tell when some never arrive.
        stored, dropped, written = self.writer.put_event(
            topics.event_topic(self.cfg.store_id, self.cfg.till_id, event), event, self.cfg.till_id
        )
        if written:
            self.link.wake()
        self.published[event.KIND] += 1
        if dropped or (self.outbox.full != self._full_reported):
            self._full_reported = self.outbox.full
            self.link.publish_state()
        self._tell(lambda one: one.on_event(stored), events.describe(stored))

    def _on_recording(self) -> None:
        """The outbox stopped or started taking writes again: say so in `state` and to systemd."""
        st = self.writer.status()
        if st.degraded:
            self.notifier.status(
                f"NOT RECORDING: the outbox cannot write ({st.last_error}); {st.held} event(s) held in memory"
            )
        else:
            self.notifier.status(f"recording again; camera {self.capture.status}")
        self.link.wake()
        self.link.publish_state()
        recording = self._recording()
        self._tell(lambda one: one.on_recording(recording), "recording")

    def _recording(self) -> Recording:
        st = self.writer.status()
        return Recording(degraded=st.degraded, outbox_error=st.last_error)

    def _tell(
        self, call: Callable[[ServiceListener], object], what: str, listeners: Sequence[ServiceListener] | None = None
    ) -> None:
        for listener in list(self._listeners if listeners is None else listeners):
            try:
                call(listener)
            except Exception:
                log.exception("listener %r failed on %s", listener, what)

    def submit(self, scan: Scan, source: str, ack: Callable[[], object] | None = None) -> Submission:
        """Start a check for `scan`, or record why none runs (edge_app.till.intake). `ack` is
        called once the scan needs nothing more from whoever sent it: its record is stored (or it
        needs none)."""
        return self.intake.submit(scan, source, ack)

    # -- inputs ------------------------------------------------------------------------------------
    def _on_sale(self, sale: Sale) -> None:
        self.intake.txns.close(sale.transaction_id)
        self._tell(lambda one: one.on_sale(sale), f"the sale of {sale.transaction_id}")

    def _on_remote_ack(self, ack: events.AckEvent) -> None:
        self._tell(lambda one: one.on_event(ack), events.describe(ack))

    def _on_camera(self, status: str, reason: str) -> None:
        self.notifier.status(f"camera {status}: {reason}")
        self.link.publish_state()

    # -- state -------------------------------------------------------------------------------------
    def state(self) -> TillState:
        rec = self.writer.status()
        return TillState(
            ts=now_iso(),
            status="online",
            heartbeat_s=STATE_EVERY_S,
            version=__version__,
            model_id=self.model.model_id,
            camera=self.capture.status,
            camera_detail=self.capture.reason,
            outbox_depth=self.outbox.depth(),
            outbox_max=self.outbox.max_events,
            outbox_full=self.outbox.full,
            outbox_dropped=self.outbox.dropped_total(),
            degraded=rec.degraded,
            outbox_write_errors=rec.write_errors,
            outbox_held=rec.held,
            outbox_held_max=rec.held_max,
            outbox_held_dropped=rec.held_dropped,
            outbox_error=rec.last_error,
            mqtt_subscribed=self.link.subscribed.is_set(),
            mqtt_error=self.link.error,
            security_warnings=tuple(self.link.trust_warnings),
            last_seq=self.outbox.last_seq(),
            checks=self.published[events.CheckEvent.KIND],
            messages_quarantined=self.counts[Count.MESSAGES_QUARANTINED],
            scans_missed={r: self.intake.missed[r] for r in MissedReason},
            pos_clock_ahead_s=_tenths(self.intake.pos_clock.ahead_s),
            pos_clock_skew=self.intake.pos_clock.describe(),
            last_quarantined=self.inbound.last_quarantined,
            last_check=self.last_check,
            started=self.started_ts,
        )

    # -- worker ------------------------------------------------------------------------------------
    def _beat(self) -> None:
        self.worker_heartbeat = time.monotonic()

    def _work(self) -> None:
        while not self._stop.is_set():
            self._beat()
            waiting = self.intake.next(timeout=0.5)
            if waiting is None:
                continue
            trig, fut = waiting
            try:
                outcome = self.checker.run(trig, heartbeat=self._beat)
            except Exception as exc:  # one broken check must not end the service
                log.exception("check for transaction %s failed", trig.scan.transaction_id)
                self.intake.record_missed(
                    trig.scan,
                    trig.source,
                    trig.min_age,
                    trig.received_ts,
                    MissedReason.CHECK_FAILED,
                    f"the check failed: {exc!r}"[:300],
                )
                fut.set_exception(exc)
                continue
            self._deliver(outcome)
            fut.set_result(outcome)

    def _deliver(self, outcome: CheckOutcome) -> None:
        c = outcome.check
        self.last_check = LastCheck.of(c)
        age = f"age {c.age:.1f} ({c.age_band})" if c.age is not None else "no age"
        log.info(
            "check %s txn %s: %s, %s, %d/%d frames usable, %d face(s), %.0f ms",
            c.event_id[:8],
            c.transaction_id,
            DECISION_SHORT[c.decision],
            age,
            c.frames_used,
            c.frames_seen,
            c.faces_seen,
            c.latency_ms.total,
        )
        for ev in (c, outcome.alert):
            if ev is None:
                continue
            try:
                self.publish_event(ev)
            except Exception:
                log.exception("could not store %s event %s in the outbox", ev.KIND, ev.event_id)
        self.link.publish_state()

    # -- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> Service:
        cfg = self.cfg
        self.capture.start()
        self.writer.start()
        self.link.start()
        self._worker = threading.Thread(target=self._work, name="check-worker", daemon=True)
        self._worker.start()
        if cfg.triggers.http_port:
            try:
                self.http = start_http_trigger(cfg, self.submit)
            except ConfigError:
                self.stop()
                raise
        if cfg.triggers.stdin:
            StdinTrigger(self._stdin, self.submit, cfg.triggers).start()
        self._attach_plugins()
        log.info(
            "agecheck %s running: store %s till %s, model %s, camera %s",
            __version__,
            cfg.store_id,
            cfg.till_id,
            self.model.model_id,
            cfg.camera.source,
        )
        self.notifier.ready(f"running; camera {self.capture.status}")
        return self

    def _attach_plugins(self) -> None:
        cfg = self.cfg
        tracker = IntegrityTracker(
            cfg.store_id, cfg.till_id, cfg.integrity.grace_seconds, cfg.integrity.forget_after_seconds
        )
        monitor = IntegrityMonitor(tracker, self.publish_event, max_payload_bytes=cfg.triggers.max_payload_bytes)
        self.listen(monitor)
        monitor.start()
        self._closers.append(monitor.stop)
        for factory in self._plugins:
            plugin = factory(self)
            if plugin is not None:
                self._closers.append(plugin.shutdown)

    def run(self, stop: threading.Event) -> None:
        """Main loop (main thread): watchdog pings and periodic state until `stop` is set."""
        feeder = WatchdogFeeder(
            self.notifier,
            {
                "capture": lambda: self.capture.heartbeat,
                "check": lambda: self.worker_heartbeat,
                "mqtt-sender": lambda: self.link.heartbeat,
            },
        )
        next_state = time.monotonic() + STATE_EVERY_S
        tick = min(1.0, feeder.period) if feeder.active else 1.0
        while not stop.wait(tick):
            feeder.tick()
            if time.monotonic() >= next_state:
                next_state = time.monotonic() + STATE_EVERY_S
                self.link.publish_state()

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.notifier.stopping()
        log.info("stopping")
        if self.http is not None:
            self.http.stop()
            self.http = None
        for close in reversed(self._closers):
            try:
                close()
            except Exception:
                log.exception("stopping a plug-in failed")
        self._closers.clear()
        self._stop.set()
        if self._worker is not None:
            self._worker.join(self.cfg.check.time_budget_ms / 1000 + 5)
            self._worker = None
        self.checker.close()
        waiting = self.intake.close()
        if waiting:
            log.warning("%d scan(s) were still waiting for a check at shutdown; recorded as missed", waiting)
        self.quarantine_log.flush()
        self.capture.stop()
        self.writer.close()  # a last try to store what a full disk held back (logs what is lost)
        self.link.stop()
        left = self.outbox.depth()
        self.outbox.close()
        self._close_pipeline()
        log.info("stopped; %d event(s) left in the outbox for the next start", left)


def install_signal_handlers(stop: threading.Event) -> None:
    stop_on_signals(stop, log=log)


def main(args: argparse.Namespace, cfg: Config, plugins: Sequence[PluginFactory] = ()) -> int:
    # This process never needs TensorFlow: keep mediapipe from loading it (start-up, memory).
    import_mediapipe(hide_tensorflow=True)
    stop = threading.Event()
    install_signal_handlers(stop)
    service = Service(cfg, plugins=plugins).start()
    try:
        service.run(stop)
    finally:
        service.stop()
    return 0
