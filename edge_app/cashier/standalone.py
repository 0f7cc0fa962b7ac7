"""`agecheck display`: the cashier window as its own process, for a till where the service runs
under systemd and cannot reach the cashier's desktop. Started from the desktop session (an XDG
autostart entry, /etc/xdg/autostart/agecheck-display.desktop from the Debian package), it needs no systemd of its own:

* `display_config` - the broker login it uses: `display.mqtt_username`/`mqtt_password_file` (or
  `--password-file`) when given, since the till's password is a systemd credential only the
  service can read; a clear error naming the fix when that is all there is;
* `display_publisher` - the `publisher` its answers are numbered under ("<till_id>:display");
* `AckLink` - its broker connection: this till's events/check, events/alert and events/ack
  (answers from another display) on a persistent session, answers kept in its own SQLite outbox
  in the user's state folder until the broker has them;
* `main` - the process: the window on the main thread, reconnecting by itself across broker
  restarts, SIGTERM closes it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path

from paho.mqtt.subscribeoptions import SubscribeOptions

from edge_app.cashier.isolated import WindowProcess
from edge_app.cashier.window import DisplayError
from edge_app.config import Config, ConfigError
from edge_app.core import event_bounds, events, payloads, topics
from edge_app.core.state import STATE_LEAF
from edge_app.errors import UsageError
from edge_app.stopping import stop_on_signals
from edge_app.transport.mqtt import MqttLink
from edge_app.transport.mqtt_messages import Message
from edge_app.transport.mqtt_setup import read_password
from edge_app.transport.outbox import Outbox
from edge_app.transport.outbox_file import OutboxError

log = logging.getLogger(__name__)


# New windows in a row that could not open before `agecheck display` gives up (the waits between
# them double from 1 s: about a quarter of a minute).
GIVE_UP_AFTER = 4


def display_config(cfg: Config, password_file: str | None = None) -> Config:
    """The config the standalone window connects with. Raises ConfigError when the only broker
    password is a systemd credential and this process has none ($CREDENTIALS_DIRECTORY unset)."""
    d, m = cfg.display, cfg.mqtt
    pw_file = password_file or d.mqtt_password_file
    if pw_file:
        m = dataclasses.replace(
            m, username=d.mqtt_username or m.username, password_file=pw_file, password_credential=None
        )
    elif d.mqtt_username:
        m = dataclasses.replace(m, username=d.mqtt_username, password_file=None, password_credential=None)
    elif m.password_credential and not os.environ.get("CREDENTIALS_DIRECTORY"):
        raise ConfigError(
            "display.mqtt_password_file: the broker password in this config is the till service's systemd "
            f"credential (mqtt.password_credential: {m.password_credential}), which a desktop session cannot "
            "read; give the window a password file its user can read (display.mqtt_password_file, or "
            "`agecheck display --password-file PATH`), see docs/cashier.md"
        )
    return dataclasses.replace(cfg, mqtt=m)


def display_publisher(till_id: str) -> str:
    """The `publisher` of the answers a standalone window sends for a till (':' cannot occur in
    a till id, so it never names a till service)."""
    return f"{till_id}:display"


class AckLink:
    """The standalone window's broker connection: an `mqtt.MqttLink` that subscribes to this
    till's events/check and events/alert (a persistent session, so alerts published while the
    window restarts still reach it) and events/ack from other clients (an alert answered on
    another display leaves this one), and delivers answers from the display's own SQLite
    outbox, oldest first, deleting each only on its PUBACK. It never speaks for the till (no
    availability or state)."""

    SESSION_EXPIRY_S = 300

    def __init__(self, cfg: Config, on_event: Callable[[events.Event], None]) -> None:
        self.outbox = Outbox(cfg.display.outbox_path, cfg.outbox.max_events)
        self._on_event = on_event
        self._max_bytes = cfg.feed.max_payload_bytes
        subs = [
            (topics.event_leaf(k), SubscribeOptions(qos=1))
            for k in (events.CheckEvent, events.AlertEvent, events.IntegrityEvent)
        ]
        # The till's retained state: proof that this login may read the till's topics at all.
        subs.append((STATE_LEAF, SubscribeOptions(qos=1)))
        self.heard_till = threading.Event()
        # No-local: our own answers would come back otherwise.
        subs.append((topics.event_leaf(events.AckEvent), SubscribeOptions(qos=1, noLocal=True)))
        try:
            self.link = MqttLink(
                cfg,
                self.outbox,
                self._on_message,
                subs,
                client_id=f"agecheck-display-{cfg.store_id}-{cfg.till_id}",
                session_expiry_s=self.SESSION_EXPIRY_S,
                name="display",
            )
        except BaseException:
            self.outbox.close()
            raise

    def start(self) -> AckLink:
        self.link.start()
        return self

    def publish(self, ack: events.AckEvent) -> None:
        """Store the answer durably (raises if it cannot be stored) and wake the sender."""
        topic = topics.event_topic(ack.store_id, ack.till_id, ack)
        # Its own numbering, apart from the till's: the window has its own outbox.
        self.outbox.put_event(topic, ack, display_publisher(ack.till_id))
        self.link.wake()

    def stop(self, flush_timeout: float = 3.0) -> None:
        self.link.stop(flush_timeout)
        self.outbox.close()

    @property
    def connected(self) -> bool:
        return self.link.connected

    def _on_message(self, msg: Message) -> None:
        # (Acknowledged by paho on return: this link does not ack by hand.)
        leaf, payload = msg.leaf, msg.payload
        if leaf == STATE_LEAF:
            self.heard_till.set()
            return
        try:
            ev = events.decode_event(payload, payloads.Limits(self._max_bytes))
        except (payloads.PayloadError, event_bounds.SchemaError) as exc:
            # Acknowledged all the same (returning normally): a redelivery would fail again.
            log.warning("display: quarantined a message on %s: %s (%d bytes)", leaf, exc, len(payload))
            return
        self._on_event(ev)


def _state_folder(path: str) -> None:
    """The outbox's folder, private to the cashier's user when we make it."""
    folder = Path(path).parent
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"display.outbox_path: cannot create the folder {str(folder)!r} for the window's "
            f"answers ({exc.strerror}); point display.outbox_path at a folder this user can "
            "write"
        ) from None


def not_connected_text(till_id: str) -> str:
    return f"NOT CONNECTED TO TILL {till_id}: check the login"


def watch_till(link: AckLink, display, till_id: str, timeout: float, stop: threading.Event) -> None:
    """Once subscribed, the till's retained state must come within `timeout` s: a broker that
    lets this login connect and subscribe but not read the till's topics (an ACL that does not
    name it) delivers nothing and says nothing. Then the window says so, and the log."""
    shown = False
    while not stop.is_set():
        if not link.link.subscribed.wait(0.5):
            continue
        if link.heard_till.wait(timeout):
            if shown:
                log.info("display: hearing from till %s now", till_id)
                display.set_notice(None)
                shown = False
            stop.wait(1.0)
            continue
        if not shown and link.link.subscribed.is_set():
            log.error(
                "display: %s (subscribed as %r, but nothing from the till in %.0f s: the broker's ACL must "
                "let this user read the till's topics, see docs/security.md)",
                not_connected_text(till_id),
                link.link.cfg.mqtt.username,
                timeout,
            )
            display.set_notice(not_connected_text(till_id))
            shown = True


def _publish(link: AckLink | None, ack: events.AckEvent) -> None:
    """A cashier's answer to the link; raises (the window process logs it) when there is no link yet."""
    if link is None:
        raise RuntimeError("an answer came before the link to the broker was opened")
    link.publish(ack)


def main(args, cfg: Config) -> int:
    """`agecheck display`: the alert window as its own process next to the service. The window
    itself runs in a child process (edge_app.cashier.isolated), started again whenever it dies."""
    cfg = display_config(cfg, getattr(args, "password_file", None))
    read_password(cfg.mqtt)  # a missing or unreadable password file is said before any window opens
    _state_folder(cfg.display.outbox_path)
    history = str(Path(cfg.display.outbox_path).with_name("display-shown.jsonl"))
    link: AckLink | None = None
    # A screen that is gone for good (the cashier logged out; Debian keeps a session's processes
    # by default) ends this program rather than leaving it connected to the broker, retrying a
    # window, beside the next session's own `agecheck display` under the same client id.
    display = WindowProcess(
        cfg.display,
        cfg.store_id,
        cfg.till_id,
        on_ack=lambda ev: _publish(link, ev),
        history_path=history,
        give_up_after=GIVE_UP_AFTER,
    )
    try:
        display.start()
    except DisplayError as exc:
        raise UsageError(str(exc)) from None
    try:
        link = AckLink(cfg, display.on_event)
    except (OutboxError, ConfigError) as exc:
        display.shutdown()
        raise UsageError(str(exc)) from None
    stop = threading.Event()
    stop_on_signals(stop, (signal.SIGTERM,))
    link.start()
    watcher = threading.Thread(
        target=watch_till,
        args=(link, display, cfg.till_id, cfg.display.till_state_timeout_seconds, stop),
        name="till-watch",
        daemon=True,
    )
    watcher.start()
    print(
        f"agecheck display: window ready for {cfg.store_id}/{cfg.till_id}; answers are kept in "
        f"{cfg.display.outbox_path} until the broker at {cfg.mqtt.host}:{cfg.mqtt.port} has them",
        flush=True,
    )
    rc = 0
    try:
        while not stop.wait(0.5):
            if display.gone.is_set():
                print(
                    f"agecheck display: no window can open on {os.environ.get('DISPLAY')!r} any more; stopping",
                    flush=True,
                )
                rc = 1
                break
    except KeyboardInterrupt:
        stop.set()
    display.shutdown()
    link.stop()
    return rc
