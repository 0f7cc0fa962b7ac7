"""The docs' banner sheet, drawn by the real window on Xvfb from the typed events the
screenshots tool builds: every state is on the sheet in its own colour."""

from __future__ import annotations

from edge_app.cashier.banner import STYLES
from edge_app.core.words import Decision
from edge_app.devtools import screenshots
from tests.edge_app.x11_util import hex_rgb, xvfb  # noqa: F401


def test_the_banner_sheet_shows_every_state(xvfb, tmp_path):
    from PIL import Image

    check, alert = screenshots._events(Decision.NO_FACE, "T-1", camera="down")
    assert alert.check_event_id == check.event_id and alert.item == check.trigger.product
    assert check.policy.calibrated and alert.item.name == "Lager 4x440ml"
    path = screenshots.banners(tmp_path)
    sheet = Image.open(path).convert("RGB")
    colours = {c for _, c in sheet.getcolors(maxcolors=1 << 20)}
    for kind in ("ok", "ask_id", "no_face", "camera_down", "recorded"):
        assert hex_rgb(STYLES[kind].bg) in colours, kind
    assert sheet.width > 2 * 400 and sheet.height > 3 * 200  # six shots, two abreast
