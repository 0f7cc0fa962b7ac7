"""Topics: where each message lives on the broker. Everything of one till sits under
`agecheck/v1/STORE/TILL/`: its events one level per kind (`events/check`), its retained state and
availability, the POS's scans and sales, so a broker ACL can grant a till, a display or a feed
exactly its own part. The leaves of state and POS messages are named by their own modules
(core.state, core.pos); this module builds and reads the topics."""

from __future__ import annotations

from edge_app.core.events import EVENT_KINDS, Event

TOPIC_ROOT = "agecheck/v1"


def topic(store_id: str, till_id: str, leaf: str) -> str:
    return f"{TOPIC_ROOT}/{store_id}/{till_id}/{leaf}"


def event_leaf(kind: str | Event | type[Event] | None = None) -> str:
    """The leaf below a till's topic that events of a kind (a kind word, an event or its class)
    are published on, "events/check"; with no kind, the pattern for all of them, "events/#"."""
    if kind is None:
        return "events/#"
    word = kind if isinstance(kind, str) else kind.KIND
    if word not in EVENT_KINDS:
        raise ValueError(f"unknown event kind {word!r}")
    return f"events/{word}"


def event_topic(store_id: str, till_id: str, kind: str | Event | type[Event] | None = None) -> str:
    """The full topic of `event_leaf(kind)` for one till."""
    return topic(store_id, till_id, event_leaf(kind))


def event_subscription(store_id: str = "+", till_id: str = "+") -> str:
    """The subscription to every kind of event of the tills it names ("+" for all): one topic
    level per kind, so nothing published deeper is delivered."""
    return topic(store_id, till_id, "events/+")


def parse_event_topic(name: str) -> tuple[str, str, str] | None:
    """(store_id, till_id, kind word) of an event topic, or None when `name` is not one."""
    parts = name.split("/")
    root = TOPIC_ROOT.split("/")
    if len(parts) != len(root) + 4 or parts[: len(root)] != root or parts[len(root) + 2] != "events":
        return None
    return parts[len(root)], parts[len(root) + 1], parts[len(root) + 3]
