"""The feed names why it cannot connect, like the till service: a real Mosquitto with a TLS
listener whose certificate is signed by another CA, made for another name, or expired, and a
plain MQTT port given as the TLS one. Before, each was "cannot reach the broker"."""

from __future__ import annotations

import io

import pytest

from edge_app.config import from_dict
from edge_app.devtools.sim import free_port
from edge_app.manager.feed import Feed
from tests.edge_app.broker_util import Broker
from tests.edge_app.service_util import REPO
from tests.edge_app.tls_util import make_ca, server_cert
from tests.helpers import wait_until


@pytest.mark.parametrize(
    "case, words",
    [
        ("other CA", "not signed by a CA trusted here"),
        ("other name", "not valid for the name '127.0.0.1'"),
        ("expired", "outside its validity dates"),
        ("plain port", "did not answer in TLS"),
    ],
)
def test_feed_names_why_it_cannot_connect(tmp_path, case, words):
    broker_ca = make_ca(tmp_path, "broker-ca")
    cert, key = server_cert(
        tmp_path,
        broker_ca,
        "DNS:broker.store.example" if case == "other name" else "DNS:localhost,IP:127.0.0.1",
        expired=case == "expired",
    )
    trusted = make_ca(tmp_path, "feed-ca")[0] if case == "other CA" else broker_ca[0]
    tls_port = free_port()
    broker = Broker(
        extra_config=(f"listener {tls_port} 127.0.0.1", f"cafile {broker_ca[0]}", f"certfile {cert}", f"keyfile {key}")
    ).start()
    port = broker.port if case == "plain port" else tls_port
    cfg = from_dict(
        {"mqtt": {"port": port, "reconnect_max_seconds": 1, "tls": {"enabled": True, "ca_file": str(trusted)}}}, REPO
    )
    out = io.StringIO()
    feed = Feed(cfg, tmp_path / "feed.sqlite3", out=out).start()
    try:
        wait_until(lambda: "cannot connect" in out.getvalue(), 15, "the feed to say why it cannot connect")
        line = next(x for x in out.getvalue().splitlines() if "cannot connect" in x)
        assert words in line, line
        assert "TLS" in line, line
    finally:
        feed.stop()
        broker.close()
