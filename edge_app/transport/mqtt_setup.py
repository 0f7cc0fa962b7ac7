"""How a program reaches the broker, from its `mqtt` settings: the paho client with its login and TLS
(`make_client`), the password read from a file or a systemd credential, what makes the link
forgeable or readable (`trust_warnings`), the CONNECT properties, and the words for a connect
that failed. The link that then carries messages is `edge_app.transport.mqtt`."""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import ssl
import stat
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge_app.config import ConfigError, MQTTConfig
from edge_app.config.files import read_secret

log = logging.getLogger(__name__)


def read_password(m: MQTTConfig) -> str | None:
    """The broker password from mqtt.password_file or the systemd credential named by
    mqtt.password_credential ($CREDENTIALS_DIRECTORY/<name>); never from config.yaml."""
    secret = read_secret(m.password_file, m.password_credential, "mqtt.password")
    if secret == "" and not m.password_file and m.password_credential:
        # The unit's SetCredential= default when the installer has written no password file:
        # the same unit serves brokers with and without a password.
        log.info("mqtt: credential %r is empty: connecting without a password", m.password_credential)
        return None
    return secret


def is_loopback(host: str) -> bool:
    """True for this machine (localhost, 127.0.0.0/8, ::1); names other than localhost are not
    resolved: a name may point elsewhere tomorrow."""
    name = host.strip().lower()
    if name in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


def password_file_warning(m: MQTTConfig) -> str | None:
    """A sentence when mqtt.password_file can be read (or written) by users other than its owner;
    None when it cannot, or when there is no such file (a missing file is read_password's error)."""
    if not m.password_file:
        return None
    try:
        mode = os.stat(m.password_file).st_mode
    except OSError:
        return None
    if not mode & (stat.S_IRWXG | stat.S_IRWXO):
        return None
    return (
        f"the broker password file {m.password_file} can be read by other users of this machine "
        f"(mode {stat.S_IMODE(mode):04o}); run: chmod 600 {m.password_file}"
    )


def trust_warnings(m: MQTTConfig) -> list[str]:
    """What makes the link to this broker forgeable or readable by others, one sentence each.
    Logged at start-up and kept in the till's `state`. A broker on this machine needs neither TLS
    nor a login, but a password file open to others is said about wherever the broker is."""
    pw = password_file_warning(m)
    out = [pw] if pw else []
    if is_loopback(m.host):
        return out
    where = f"broker {m.host}:{m.port} is not on this machine"
    if not m.tls.enabled:
        out.append(
            f"{where} and mqtt.tls.enabled is false: estimated ages, the cashier's answers and the "
            "password cross the network readable and changeable by anyone on it"
        )
    elif m.tls.insecure:
        out.append(
            "mqtt.tls.insecure is true: the broker's certificate is not checked against its name, so "
            "another machine can pose as the broker"
        )
    if not m.username:
        out.append(
            f"{where} and no mqtt.username is set: that broker lets anonymous clients in, and any of "
            "them can publish forged scans, answers and events or read every check "
            "(see docs/security.md and deploy/mosquitto/agecheck-secure.conf)"
        )
    return out


def session_client_id(m: MQTTConfig, fallback: str) -> str:
    """The client id a program's broker session is kept under when none is configured: its login
    when it has one, since the shipped secure broker (use_username_as_clientid) keys every session
    on the login anyway, so that no other user can take it over; else `fallback`."""
    return m.username or fallback


def make_client(m: MQTTConfig, client_id: str) -> mqtt.Client:
    """A paho v2 client (MQTT 5) with the broker settings from the config applied. Raises
    ConfigError naming the key for a missing password or unreadable TLS files."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    password = read_password(m)
    if password is not None and not m.username:
        raise ConfigError("mqtt.username: a password is configured but no username; set mqtt.username")
    if m.username:
        client.username_pw_set(m.username, password)
    if m.tls.enabled:
        for key in ("ca_file", "cert_file", "key_file"):
            f = getattr(m.tls, key)
            if f and not Path(f).is_file():
                raise ConfigError(f"mqtt.tls.{key}: file {f!r} does not exist")
        try:
            client.tls_set(
                ca_certs=m.tls.ca_file, certfile=m.tls.cert_file, keyfile=m.tls.key_file, cert_reqs=ssl.CERT_REQUIRED
            )
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"mqtt.tls: cannot load the certificate files ({exc})") from None
        client.tls_insecure_set(m.tls.insecure)
    client.reconnect_delay_set(min_delay=1, max_delay=reconnect_max(m))
    return client


def connect_properties(receive_max: int | None = None, session_expiry_s: int | None = None) -> Properties:
    """The MQTT 5 CONNECT properties of a client that limits how many unacknowledged messages
    the broker sends it, keeps its session for a while after a disconnect, or both."""
    props = Properties(PacketTypes.CONNECT)
    if receive_max is not None:
        props.ReceiveMaximum = receive_max
    if session_expiry_s is not None:
        props.SessionExpiryInterval = session_expiry_s
    return props


def reconnect_max(m: MQTTConfig) -> int:
    """paho's reconnect back-off cap in whole seconds."""
    return max(1, int(round(m.reconnect_max_seconds)))


# Verify codes (OpenSSL X509_V_ERR_*) that mean: the certificate chain ends at a CA we do not trust.
_UNTRUSTED_CA = {2, 18, 19, 20, 21}
_EXPIRED = {9, 10}  # not yet valid, expired


def connect_error(exc: BaseException | None, m: MQTTConfig) -> str:
    """Why a connection attempt to the broker failed, in words that name the check that failed
    and the setting to look at. `exc` is what paho's connect raised (None when unknown)."""
    where = f"{m.host}:{m.port}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        msg = exc.verify_message or str(exc)
        if "mismatch" in msg.lower():
            return (
                f"TLS: the broker's certificate is not valid for the name {m.host!r} ({msg}); set mqtt.host "
                "to a name the certificate holds, or give the broker a certificate for this name"
            )
        if exc.verify_code in _UNTRUSTED_CA:
            ca = m.tls.ca_file or "the system's CA list"
            return (
                f"TLS: the broker's certificate is not signed by a CA trusted here ({msg}); "
                f"mqtt.tls.ca_file must be the CA that signed it (now: {ca})"
            )
        if exc.verify_code in _EXPIRED:
            return f"TLS: the broker's certificate is outside its validity dates ({msg}); check its dates and this PC's clock"
        return f"TLS: certificate verify failed: {msg}"
    if m.tls.enabled and isinstance(exc, (ConnectionResetError, ssl.SSLEOFError, ssl.SSLZeroReturnError)):
        # A plain MQTT listener reads our TLS hello as a broken MQTT packet and hangs up.
        return (
            f"TLS: {where} did not answer in TLS (the connection was closed during the handshake: "
            f"{exc}); is it the broker's plain MQTT port rather than its TLS listener?"
        )
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or str(exc)
        if reason == "WRONG_VERSION_NUMBER":
            return f"TLS: {where} did not answer in TLS ({reason}); is it the broker's TLS listener?"
        if "CERTIFICATE" in reason:
            return (
                f"TLS: the broker refused this till's client certificate ({reason}); check "
                "mqtt.tls.cert_file / key_file and the broker's require_certificate"
            )
        return f"TLS handshake with {where} failed ({reason})"
    if isinstance(exc, ConnectionRefusedError):
        return f"nothing accepts connections on {where} (connection refused): is the broker running?"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the broker's name {m.host!r} ({exc.strerror or exc})"
    if isinstance(exc, TimeoutError):
        return f"no answer from {where} (timed out)"
    if isinstance(exc, OSError):
        return f"cannot reach {where} ({exc.strerror or exc})"
    return f"cannot reach {where}"


def login_refused(reason_code: ReasonCode) -> str:
    """The `mqtt_error` for a CONNACK that refused us (bad user name or password, not authorised...)."""
    return f"broker refused the login: {str(reason_code).lower()}"


def lasting_failure(exc: BaseException | None) -> bool:
    """A connect failure that retrying in a second cannot cure (a certificate, a TLS setting)."""
    return isinstance(exc, ssl.SSLError)
