"""`agecheck display` as its own process: a real window under Xvfb, fed by a real Mosquitto,
answered with real clicks; answers reach the broker through the display's SQLite outbox,
including one given while the broker is down, and the window carries on after a broker restart.
It runs from a desktop session without systemd: its outbox in the user's XDG state folder, its
broker password from a file it is given, against a broker that requires one."""

from __future__ import annotations

import sqlite3
import subprocess

import pytest

from edge_app.cashier.banner import DECISION_KIND, STYLES
from edge_app.transport.mqtt_messages import Message
from tests.edge_app.broker_util import Broker
from tests.edge_app.feed_util import Collector, Proc, Publisher, alert_event, check_event, write_config
from tests.edge_app.x11_util import click, dominant, hex_rgb, screenshot, wait_for, xdotool, xvfb  # noqa: F401
from tests.helpers import REPO

ACK_TOPIC = "agecheck/v1/store-001/till-01/events/ack"


def window_box() -> tuple[int, int, int, int] | None:
    ids = xdotool("search", "--onlyvisible", "--classname", "agecheck").split()
    if not ids:
        return None
    geo = dict(line.split("=", 1) for line in xdotool("getwindowgeometry", "--shell", ids[-1]).splitlines())
    return int(geo["X"]), int(geo["Y"]), int(geo["WIDTH"]), int(geo["HEIGHT"])


def banner_colour(box) -> tuple[int, int, int]:
    x, y, w, h = box
    return dominant(screenshot((x, y, w, h // 2)))[0]  # the top half is all banner


def show_and_wait(pub: Publisher, decision: str, age, txn: str) -> dict:
    c = check_event(decision=decision, age=age, txn=txn)
    a = alert_event(c)
    pub.event(c)
    pub.event(a)
    want = hex_rgb(STYLES[DECISION_KIND[decision]].bg)
    wait_for(
        lambda: (b := window_box()) and banner_colour(b) == want, timeout=15, what=f"the {decision} banner on screen"
    )
    return a


def press(answer: int) -> None:
    """Click answer button 1, 2 or 3: the answers' row of the window (banner.layout), in thirds."""
    from edge_app.cashier.banner import layout

    x, y, w, h = window_box()
    row = layout(w, h)
    click((x + (answer - 1) * row.button_w, y + row.answers_y + row.answers_h // 4, row.button_w, row.answers_h // 2))


def outbox_rows(path) -> int:
    con = sqlite3.connect(str(path))
    try:
        return con.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    finally:
        con.close()


def test_standalone_display_over_a_broker_restart(xvfb, tmp_path):
    outbox = tmp_path / "display-outbox.sqlite3"
    with Broker(persistent=True) as broker:
        cfg = write_config(
            tmp_path / "config.yaml",
            broker.port,
            display={"position": "top-left", "outbox_path": str(outbox), "undo_seconds": 1},
            mqtt={"host": "127.0.0.1", "port": broker.port, "reconnect_max_seconds": 1},
        )
        acks = Collector(broker.port, ACK_TOPIC, persistent=True)
        proc = Proc(["display", "--config", str(cfg)])
        pub = None
        try:
            proc.wait_line("window ready")
            # Subscribed, not merely connected: a first session has no subscriptions until then.
            first = proc.wait_line("display: subscribed")
            assert window_box() is None  # idle: nothing on screen
            pub = Publisher(broker.port)

            # 1. A red ASK FOR ID banner, answered with button 1.
            a1 = show_and_wait(pub, "check_id", 19.0, "T-1")
            screenshot(window_box()).save(tmp_path / "check_id.png")
            press(1)
            ack1 = acks.wait_for(lambda t, b: isinstance(b, dict) and b.get("alert_event_id") == a1["event_id"])
            assert ack1["answer"] == "id_checked_over_age" and ack1["transaction_id"] == "T-1"
            wait_for(lambda: window_box() is None, what="the window to hide")

            # 2. An amber NO FACE banner answered with button 3 while the broker is down: the
            #    answer waits in the outbox and arrives once the broker is back.
            a2 = show_and_wait(pub, "no_face", None, "T-2")
            pub.close()
            pub = None
            broker.stop()
            press(3)
            wait_for(lambda: outbox.exists() and outbox_rows(outbox) == 1, what="the answer kept in the outbox")
            broker.start()
            ack2 = acks.wait_for(
                lambda t, b: isinstance(b, dict) and b.get("alert_event_id") == a2["event_id"], timeout=20
            )
            assert ack2["answer"] == "no_id_check" and ack2["transaction_id"] == "T-2"
            wait_for(lambda: outbox_rows(outbox) == 0, what="the outbox to drain")

            # 3. After the restart the window still gets alerts: button 2.
            proc.wait_line("display: subscribed", after=first + 1, timeout=20)
            wait_for(lambda: window_box() is None, what="the confirmation of answer 2 to go")
            pub = Publisher(broker.port)
            a3 = show_and_wait(pub, "check_id", 16.0, "T-3")
            press(2)
            ack3 = acks.wait_for(lambda t, b: isinstance(b, dict) and b.get("alert_event_id") == a3["event_id"])
            assert ack3["answer"] == "id_checked_under_age_refused"
            # Numbered by the window's own outbox, apart from the till's events, across the restart.
            assert [(a["publisher"], a["seq"]) for a in (ack1, ack2, ack3)] == [
                ("till-01:display", 1),
                ("till-01:display", 2),
                ("till-01:display", 3),
            ]
        finally:
            if pub:
                pub.close()
            rc = proc.stop()
            acks.close()
    assert rc == 0, proc.output
    ids = [b["event_id"] for _, b in acks.messages]
    assert len(set(ids)) == 3  # three answers (a QoS 1 redelivery may repeat one; de-duplicated by id)


def test_display_without_a_screen_says_so(tmp_path):
    proc = Proc(["display", "--config", str(write_config(tmp_path / "c.yaml", 1883))], env={"DISPLAY": ""})
    assert proc.p.wait(timeout=30) == 2
    proc.stop()
    assert "no screen: $DISPLAY is not set" in proc.output
    assert not (tmp_path / "display-outbox.sqlite3").exists()


def mosquitto_password_file(path, user: str, password: str):
    try:
        subprocess.run(
            ["mosquitto_passwd", "-c", "-b", str(path), user, password], check=True, capture_output=True, timeout=30
        )
    except FileNotFoundError:
        pytest.skip("mosquitto_passwd is not installed (it comes with mosquitto)")
    path.chmod(0o644)  # mosquitto runs as root here and reads it either way
    return path


def test_standalone_display_from_a_desktop_session(xvfb, tmp_path):
    """Set up as docs/cashier.md says: the till's config names a systemd credential for the
    service, and the window gets its own login from display.mqtt_password_file. No
    $CREDENTIALS_DIRECTORY, no $STATE_DIRECTORY: the answers go to $XDG_STATE_HOME/agecheck."""
    pwfile = mosquitto_password_file(tmp_path / "mosquitto.passwd", "cashier-display", "display-pass")
    secret = tmp_path / "display-mqtt-password"
    secret.write_text("display-pass\n")
    secret.chmod(0o600)
    state = tmp_path / "state"
    broker = Broker(extra_config=(f"password_file {pwfile}",))
    broker.conf.write_text(broker.conf.read_text().replace("allow_anonymous true", "allow_anonymous false"))
    with broker:
        cfg = write_config(
            tmp_path / "config.yaml",
            broker.port,
            mqtt={"host": "127.0.0.1", "port": broker.port, "username": "till", "password_credential": "mqtt-password"},
            display={"position": "top-left", "mqtt_username": "cashier-display", "mqtt_password_file": str(secret)},
        )
        env = {"XDG_STATE_HOME": str(state), "CREDENTIALS_DIRECTORY": "", "STATE_DIRECTORY": ""}
        proc = Proc(["display", "--config", str(cfg)], env=env)
        try:
            proc.wait_line("window ready")
            proc.wait_line("display: connected")
            outbox = state / "agecheck" / "display-outbox.sqlite3"
            assert outbox.is_file() and (state / "agecheck").stat().st_mode & 0o777 == 0o700
            assert str(outbox) in proc.output
        finally:
            rc = proc.stop()
    assert rc == 0, proc.output
    assert "CREDENTIALS_DIRECTORY" not in proc.output


def test_standalone_display_says_how_to_give_it_a_password(xvfb, tmp_path):
    """The till's credential alone: a one-line message naming the fix, exit 2, no window."""
    cfg = write_config(
        tmp_path / "config.yaml",
        1883,
        mqtt={"host": "127.0.0.1", "port": 1883, "username": "till", "password_credential": "mqtt-password"},
    )
    proc = Proc(
        ["display", "--config", str(cfg)], env={"CREDENTIALS_DIRECTORY": "", "XDG_STATE_HOME": str(tmp_path / "state")}
    )
    assert proc.p.wait(timeout=30) == 2
    proc.stop()
    assert "display.mqtt_password_file" in proc.output and "--password-file" in proc.output
    assert "Traceback" not in proc.output
    # Given a file on the command line, the same config gets past the password (and then finds
    # no broker, which it waits for like any other outage).
    pw = tmp_path / "pw"
    pw.write_text("x")
    proc = Proc(
        ["display", "--config", str(cfg), "--password-file", str(pw)],
        env={"CREDENTIALS_DIRECTORY": "", "XDG_STATE_HOME": str(tmp_path / "state")},
    )
    try:
        proc.wait_line("window ready")
    finally:
        assert proc.stop() == 0


# -- the window's own broker link: what it lets in, and how it says its login is unsafe ------------
def test_the_windows_link_quarantines_what_the_parser_refuses(tmp_path, caplog):
    """The standalone window reads the broker with the same inbound parser as the service and
    the feed: a deep-nesting bomb, NaN or an oversize message is one log line and no banner; a
    valid alert still gets through."""
    from edge_app import config as C
    from edge_app.cashier.standalone import AckLink
    from edge_app.core import events

    cfg = C.from_dict({"display": {"outbox_path": str(tmp_path / "display.sqlite3")}})
    shown: list[events.Event] = []
    link = AckLink(cfg, shown.append)
    try:
        bad = [b"[" * 100_000, b'{"schema": NaN}', b'{"x":"' + b"a" * (cfg.feed.max_payload_bytes + 1) + b'"}']
        with caplog.at_level("WARNING", logger="edge_app.cashier.standalone"):
            for payload in bad:
                link._on_message(Message("events/alert", payload, lambda: None))
        assert shown == []
        quarantined = [r.getMessage() for r in caplog.records if "quarantined a message" in r.getMessage()]
        assert len(quarantined) == len(bad), quarantined
        alert = alert_event(check_event())
        link._on_message(Message("events/alert", events.encode(alert), lambda: None))
        assert shown == [events.from_dict(alert)]
    finally:
        link.outbox.close()


def test_trust_warnings_cover_the_windows_own_login(tmp_path):
    """The window connects with display.mqtt_username when it has one: the warnings are about
    that login, not the till's."""
    from edge_app import config as C
    from edge_app.cashier.standalone import display_config
    from edge_app.transport.mqtt_setup import trust_warnings

    pw = tmp_path / "pw"
    pw.write_text("x")
    pw.chmod(0o600)  # one open to others would add its own warning
    remote = {"host": "10.1.2.3", "tls": {"enabled": True}}
    cfg = C.from_dict({"mqtt": remote, "display": {"mqtt_username": "window", "mqtt_password_file": str(pw)}})
    assert trust_warnings(display_config(cfg).mqtt) == []
    # The same broker with the window given only a password file (no user anywhere): anonymous.
    got = trust_warnings(display_config(C.from_dict({"mqtt": remote}), password_file=str(pw)).mqtt)
    assert len(got) == 1 and "no mqtt.username" in got[0]
    plain = C.from_dict(
        {"mqtt": {"host": "10.1.2.3"}, "display": {"mqtt_username": "window", "mqtt_password_file": str(pw)}}
    )
    assert any("tls.enabled is false" in w for w in trust_warnings(display_config(plain).mqtt))


def test_the_window_shrugs_off_bad_messages_from_the_broker(xvfb, mqtt_broker, tmp_path, caplog):
    """The standalone window's broker link decodes each message once into a typed event: what is
    not JSON, not an event of this schema, or an event with a field of the wrong type is one log
    line naming the problem and never reaches the window, which carries on and shows the next
    good alert (published after the bad ones on the same topic, so they were all handled first)."""
    from edge_app import config as C
    from edge_app.cashier.standalone import AckLink
    from edge_app.cashier.window import CashierDisplay
    from edge_app.core import events
    from edge_app.core.events import AlertEvent, CheckEvent

    cfg = C.from_dict(
        {
            "store_id": "store-001",
            "till_id": "till-01",
            "mqtt": {"host": "127.0.0.1", "port": mqtt_broker.port},
            "display": {"position": "top-left", "outbox_path": str(tmp_path / "display.sqlite3")},
        }
    )
    display = CashierDisplay(cfg.display, cfg.store_id, cfg.till_id, on_ack=lambda ack: None).start_in_thread()
    heard: list[events.Event] = []
    link = AckLink(cfg, lambda ev: (heard.append(ev), display.on_event(ev)))
    pub = Publisher(mqtt_broker.port)
    try:
        link.start()
        assert link.link.subscribed.wait(10), "the window's link never subscribed"
        c = check_event(decision="check_id", age=19.0, txn="T-good")
        a = alert_event(c)
        no_item = {k: v for k, v in a.items() if k != "item"}
        bad = {
            b"{nope": "not valid JSON",
            events.encode(no_item): "missing field 'item'",
            events.encode({**a, "schema": 2}): "unknown schema version 2",
            events.encode({**a, "decision": 7}): "field 'decision' has the wrong type",
            events.encode(
                {**a, "item": {**a["item"], "name": "Lager\x1b[2J"}}
            ): "item name contains control characters",
        }
        topic = "agecheck/v1/store-001/till-01/events/alert"
        with caplog.at_level("WARNING", logger="edge_app.cashier.standalone"):
            for payload in bad:
                pub.raw(topic, payload)
            pub.event(c)
            pub.event(a)
            snap = wait_for(
                lambda: (s := display.snapshot).alert_event_id == a["event_id"] and s.drawn_at and s,
                timeout=15,
                what="the good alert on screen",
            )
        assert snap.kind == "ask_id" and snap.transaction_id == "T-good" and "Lager 4x440ml" in snap.item
        logged = [r.getMessage() for r in caplog.records if "quarantined a message on events/alert" in r.getMessage()]
        assert len(logged) == len(bad), logged
        for line, problem in zip(logged, bad.values()):
            assert problem in line, (problem, line)
        # Only the two good events got through, each decoded once into its typed class.
        assert sorted(type(e).__name__ for e in heard) == [AlertEvent.__name__, CheckEvent.__name__]
        assert display._thread.is_alive() and not display.snapshot.closed
    finally:
        pub.close()
        link.stop(flush_timeout=1)
        display.close()
        display.join(5)


def shipped_acl(with_display_block: bool) -> str:
    """deploy/mosquitto/acl as shipped, with its till-01-display block uncommented on request
    (what docs/security.md tells the installer to do)."""
    text = (REPO / "deploy" / "mosquitto" / "acl").read_text()
    if not with_display_block:
        return text
    head, _, rest = text.partition("#display-block-begin\n")
    block, _, tail = rest.partition("#display-block-end\n")
    return head + "".join(line[1:] + "\n" for line in block.splitlines()) + tail


@pytest.mark.parametrize("listed", [False, True])
def test_a_login_the_acl_does_not_let_read_the_till_says_not_connected(xvfb, tmp_path, listed):
    """Set up as docs/cashier.md and docs/security.md say, on the shipped ACL: the window's own
    login till-01-display. Without its ACL block it connects and subscribes, hears nothing, and
    says NOT CONNECTED on screen and in its log; with the block it hears the till and shows its
    alert."""
    users = tmp_path / "passwd"
    mosquitto_password_file(users, "till-01-display", "display-pass")
    subprocess.run(["mosquitto_passwd", "-b", str(users), "till-01", "till-pass"], check=True, timeout=30)
    acl = tmp_path / "acl"
    acl.write_text(shipped_acl(listed))
    secret = tmp_path / "display-mqtt-password"
    secret.write_text("display-pass\n")
    secret.chmod(0o600)
    broker = Broker(extra_config=(f"password_file {users}", f"acl_file {acl}"))
    broker.conf.write_text(broker.conf.read_text().replace("allow_anonymous true", "allow_anonymous false"))
    with broker:
        cfg = write_config(
            tmp_path / "config.yaml",
            broker.port,
            mqtt={
                "host": "127.0.0.1",
                "port": broker.port,
                "username": "till-01",
                "password_credential": "mqtt-password",
            },
            display={
                "position": "top-left",
                "mqtt_username": "till-01-display",
                "mqtt_password_file": str(secret),
                "till_state_timeout_seconds": 2,
                "outbox_path": str(tmp_path / "outbox.sqlite3"),
            },
        )
        proc = Proc(["display", "--config", str(cfg)], env={"CREDENTIALS_DIRECTORY": ""})
        till = Publisher(broker.port, username="till-01", password="till-pass")
        try:
            proc.wait_line("display: subscribed")
            # The till's retained state, as a running till service keeps it on the broker.
            till.raw("agecheck/v1/store-001/till-01/state", b'{"till_id": "till-01"}', retain=True)
            if not listed:
                proc.wait_line("NOT CONNECTED TO TILL till-01: check the login", timeout=20)
                box = wait_for(window_box, what="the notice on screen")
                assert banner_colour(box) == hex_rgb(STYLES["notice"].bg)
            else:
                a = show_and_wait(till, "check_id", 19.0, "T-acl")
                assert a["transaction_id"] == "T-acl"
                assert "NOT CONNECTED" not in proc.output
        finally:
            till.close()
            rc = proc.stop()
    assert rc == 0, proc.output


def test_standalone_display_ends_when_its_screen_is_gone(tmp_path, mqtt_broker):
    """The cashier logs out and the X server goes (Debian keeps a session's processes by
    default): `agecheck display` stops by itself, saying why, instead of retrying a window for
    ever while holding the till's display login on the broker beside the next session's own."""
    import shutil

    from edge_app.devtools.sim import Xvfb

    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (apt-get install xvfb)")
    x = Xvfb(1280, 800).start()  # its own X server: this test takes it away
    try:
        cfg = write_config(
            tmp_path / "config.yaml",
            mqtt_broker.port,
            display={"position": "top-left", "outbox_path": str(tmp_path / "outbox.sqlite3")},
        )
        proc = Proc(["display", "--config", str(cfg)], env={"DISPLAY": x.display})
        try:
            proc.wait_line("display: subscribed")
            x.stop()
            proc.wait_line("no window can open", timeout=60)
            rc = proc.p.wait(timeout=20)
        finally:
            proc.stop()
    finally:
        x.stop()
    assert rc == 1, proc.output
    assert "giving up" in proc.output
