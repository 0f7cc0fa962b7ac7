"""Files shipped with agecheck: the model and its card, the example config, the systemd unit and
the demo photo. Owns where each one lives, in an installed package and in a checkout.

An installed wheel (or the Debian package) holds them under `edge_app/data/`, copied there by
setup.py at build time from the places the project keeps them (`models/`, `config.yaml`,
`systemd/`). A checkout or an editable install has no copies, so each file falls back to its
source in the checkout. Nothing here reads the files; callers get paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

# The checkout this module sits in (meaningless, and unused, in an installed package).
_CHECKOUT = Path(__file__).resolve().parent.parent


class ResourceMissing(FileNotFoundError):
    """A shipped file is in neither the installed package nor a checkout."""


@dataclass(frozen=True)
class Shipped:
    """One shipped file: its name under edge_app/data/ and its source in the checkout. setup.py
    keeps the same table (it cannot import the package it is building); the wheel test checks
    that every entry here is in the wheel."""

    packaged: str
    source: str


MODEL = Shipped("models/age_resnet10_int8.tflite", "models/age_resnet10_int8.tflite")
MODEL_CARD = Shipped("models/age_resnet10_int8.json", "models/age_resnet10_int8.json")
EXAMPLE_CONFIG = Shipped("config.yaml", "config.yaml")
SYSTEMD_UNIT = Shipped("systemd/agecheck.service", "systemd/agecheck.service")
DEMO_PHOTO = Shipped("astronaut.png", "edge_app/data/astronaut.png")

ALL = (MODEL, MODEL_CARD, EXAMPLE_CONFIG, SYSTEMD_UNIT, DEMO_PHOTO)


def data_dir() -> Path:
    """edge_app/data/ of the imported package (a real folder: agecheck is never run zipped)."""
    return Path(str(resources.files("edge_app"))) / "data"


def path(item: Shipped) -> Path:
    """Where `item` is: the packaged copy when there is one, else the checkout's file."""
    packaged = data_dir() / item.packaged
    if packaged.is_file():
        return packaged
    source = _CHECKOUT / item.source
    if source.is_file():
        return source
    raise ResourceMissing(
        f"{item.packaged} is not in this installation ({packaged}) nor in a checkout ({source}); "
        "reinstall agecheck from its wheel or Debian package"
    )


def model_path() -> Path:
    return path(MODEL)


def default_model_path() -> str:
    """The shipped model as text for config defaults, even when it is missing (the config check
    that the model exists then names this path)."""
    try:
        return str(model_path())
    except ResourceMissing:
        return str(data_dir() / MODEL.packaged)
