"""The seams of a running till service: what a plug-in (the cashier window, the integrity monitor,
a benchmark's clock) is given and what it gives back, as Protocols, so a plug-in outside the till
package (the cashier's) fits them without importing this module.

* A `ServiceListener` is handed to `Service.listen` and hears, each on its own method:
  `on_event`: every typed event (edge_app.core.events.Event, numbered: `seq`, `publisher`) that
  goes through `publish_event` (check, alert, and whatever plug-ins publish: ack, integrity),
  after it is safely in the outbox (or held in memory while the disk is full), and the cashier's
  answers (`ack`) that another process of this till (a standalone `agecheck display`) publishes
  on the broker; `on_publishing`: each event publish_event is handed, before it is stored (with
  on_event, the clock for how long publishing takes: `agecheck bench` times outbox + MQTT with
  it); `on_sale`: every valid `pos/sale` message as the `edge_app.core.pos.Sale` the service read
  it into (parsed once; malformed ones are quarantined and reach no listener); `on_recording`: a
  `Recording` (edge_app.core.state) at once and whenever the outbox stops or starts taking
  writes (the cashier window's NOT RECORDING mark). Called on the publishing (or MQTT) thread:
  return quickly (hand work to your own thread); exceptions are logged, never propagated.
  `Listener` hears nothing: subclass it and override what you need.
* A `PluginFactory` is called once at start with the service (as a `PluginHost`) and returns the
  `Plugin` whose `shutdown()` is called at shutdown, or None when it chose not to run (the demo's
  window without a screen).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from edge_app.config import Config
from edge_app.core import events
from edge_app.core.pos import Sale
from edge_app.core.state import Recording


class ServiceListener(Protocol):
    def on_event(self, event: events.Event) -> None: ...

    def on_publishing(self, event: events.Event) -> None: ...

    def on_sale(self, sale: Sale) -> None: ...

    def on_recording(self, recording: Recording) -> None: ...


class Listener:
    """A ServiceListener that hears nothing; subclass it and override what you need."""

    def on_event(self, event: events.Event) -> None:
        pass

    def on_publishing(self, event: events.Event) -> None:
        pass

    def on_sale(self, sale: Sale) -> None:
        pass

    def on_recording(self, recording: Recording) -> None:
        pass


class PluginHost(Protocol):
    """What a plug-in sees of the service."""

    cfg: Config

    def publish_event(self, event: events.Event) -> None: ...

    def listen(self, listener: ServiceListener) -> None: ...


class Plugin(Protocol):
    def shutdown(self) -> None: ...


PluginFactory = Callable[[PluginHost], "Plugin | None"]
