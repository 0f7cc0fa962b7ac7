"""The alert window's Tk drawing: its widgets, each in a fixed place (`banner.layout`) on the Tk
root the window opens, painted with what the state machine says is shown (`window_state.View`),
and measured for the window's snapshot. Buttons have no hover look and never take the focus. The
window that owns the root, its thread and what it shows is `edge_app.cashier.window`."""

from __future__ import annotations

import functools
import tkinter as tk
import tkinter.font as tkfont
from collections.abc import Callable
from typing import Any

from edge_app.cashier.banner import BannerKind, button_lines, layout, waiting_text
from edge_app.cashier.window_state import Box, Recent, View
from edge_app.config import DisplayConfig
from edge_app.core.words import ACK_ANSWERS, ANSWER_LABELS, Answer

UNDO_BG = "#1b1b1b"
ANSWERS_BG = "#222222"
BUTTON_BG = "#f2f2f2"
# Space around each button inside its place (pixels).
BUTTON_PAD = 4
# The mark on every banner while the till cannot store events: small (the banner's instruction
# stays what the cashier reads first) and black, a colour no banner uses.
NOT_RECORDING = "NOT RECORDING"
NOT_RECORDING_BG = "#000000"


def fitted_font(
    root: tk.Misc, family: str, lines: list[str], width: int, line_height: int, start: tkfont.Font
) -> tkfont.Font:
    """A bold font of `family` in which every line is at most `width` pixels wide and at most
    `line_height` high: `start`'s size, smaller only as far as needed (the labels fit their
    buttons at every window size the config allows, instead of wrapping inside a word)."""
    px = abs(int(start.cget("size")))
    while True:
        f = tkfont.Font(root, family=family, size=-px, weight="bold")
        if px <= 8 or (max(f.measure(t) for t in lines) <= width and f.metrics("linespace") <= line_height):
            return f
        px -= 1


def screen_position(root: tk.Misc, cfg: DisplayConfig) -> tuple[int, int]:
    """Where the window's top-left corner goes for `display.position` on this screen."""
    w, h, pos = cfg.width, cfg.height, cfg.position
    sw, sh = root.winfo_screenwidth(), root.winfo_screenheight()
    x = max(0, sw - w) if pos.endswith("right") else (max(0, (sw - w) // 2) if pos == "center" else 0)
    y = max(0, sh - h) if pos.startswith("bottom") else (max(0, (sh - h) // 2) if pos == "center" else 0)
    return x, y


def box(widget: tk.Misc) -> Box:
    """Screen rectangle (x, y, w, h) of a widget."""
    return widget.winfo_rootx(), widget.winfo_rooty(), widget.winfo_width(), widget.winfo_height()


class Drawing:
    """The widgets of one window on `root`. `on_answer(answer)` and `on_undo()` are called on the
    Tk thread when the cashier taps an answer or Undo."""

    def __init__(
        self, root: tk.Tk, cfg: DisplayConfig, on_answer: Callable[[Answer], None], on_undo: Callable[[], None]
    ) -> None:
        self.root = root
        self.width, self.height = w, h = cfg.width, cfg.height
        self.layout = layout(w, h)
        self.family = "DejaVu Sans" if "DejaVu Sans" in tkfont.families(root) else "Helvetica"
        self.fonts = {
            "symbol": self._font(0.2, 24),
            "title": self._font(0.1, 14),
            "detail": self._font(0.058, 11),
            "item": self._font(0.052, 10, bold=False),
            "waiting": self._font(0.05, 10),
            "button": self._font(0.06, 10),
            "status": self._font(0.045, 10, bold=False),
        }
        self.title_fonts: dict[tuple, tkfont.Font] = {}
        self.w: dict[str, Any] = {}
        self.buttons: dict[Answer, tk.Button] = {}
        # Every part has a fixed place (place(), in pixels): nothing moves when a part shows,
        # hides or changes its text, so a finger never lands on something that slid under it.
        self._build_banner()
        self._build_answers(on_answer)
        self._build_undo_and_status(on_undo)

    def _font(self, share: float, least: int, bold: bool = True) -> tkfont.Font:
        # Negative sizes are pixels, so the text keeps its proportion to the window (sized in pixels).
        return tkfont.Font(
            self.root,
            family=self.family,
            size=-max(least, int(self.height * share)),
            weight="bold" if bold else "normal",
        )

    def _build_banner(self) -> None:
        W, w, fonts = self.w, self.width, self.fonts
        W["banner"] = tk.Frame(self.root, bg="#000000")
        W["banner"].place(x=0, y=0, width=w, height=self.layout.banner_h)
        W["banner"].pack_propagate(False)
        # Top line: which transaction, and how many more alerts wait behind this one.
        W["top"] = tk.Frame(W["banner"], bg="#000000")
        W["top"].pack(side="top", fill="x")
        W["txn"] = tk.Label(W["top"], font=fonts["item"], anchor="w")
        W["txn"].pack(side="left", padx=8, pady=(4, 0))
        W["waiting"] = tk.Label(W["top"], font=fonts["waiting"], bg="#ffffff", fg="#000000", padx=8)
        W["recording"] = tk.Label(
            W["top"], text=NOT_RECORDING, font=fonts["status"], bg=NOT_RECORDING_BG, fg="#ffffff", padx=6
        )
        # The instruction: symbol and words side by side, in the middle of the banner.
        W["main"] = tk.Frame(W["banner"], bg="#000000")
        W["main"].pack(side="top", expand=True)
        W["symbol"] = tk.Label(W["main"], font=fonts["symbol"], width=2)
        W["symbol"].pack(side="left", padx=(6, 4))
        # No wraplength: the title's lines are the ones paint() gives, in a font sized to fit them.
        W["title"] = tk.Label(W["main"], font=fonts["title"], justify="left", anchor="w")
        W["title"].pack(side="left", padx=(0, 8))
        self.title_width = int(w * 0.78)
        W["detail"] = tk.Label(W["banner"], font=fonts["detail"], wraplength=w - 20)
        W["detail"].pack(side="top", fill="x", padx=8)
        W["item"] = tk.Label(W["banner"], font=fonts["item"], wraplength=w - 20)
        W["item"].pack(side="top", fill="x", padx=8, pady=(0, 4))

    def _build_answers(self, on_answer: Callable[[Answer], None]) -> None:
        box_, W = self.layout, self.w
        W["answers"] = tk.Frame(self.root, bg=ANSWERS_BG)
        W["answers"].place(x=0, y=box_.answers_y, width=self.width, height=box_.answers_h)
        lines = {a: button_lines(a) for a in ACK_ANSWERS}
        self.fonts["button"] = fitted_font(
            self.root,
            self.family,
            [ln for ls in lines.values() for ln in ls],
            box_.button_w - 2 * BUTTON_PAD - 12,
            (box_.answers_h - 2 * BUTTON_PAD - 10) // 2,
            self.fonts["button"],
        )
        for col, answer in enumerate(ACK_ANSWERS):
            b = self._flat_button(W["answers"], "\n".join(lines[answer]), functools.partial(on_answer, answer))
            self._place_button(b, col)
            self.buttons[answer] = b

    def _build_undo_and_status(self, on_undo: Callable[[], None]) -> None:
        box_, W, w = self.layout, self.w, self.width
        # The Undo row: below the answers, never where an answer button is, and always there (empty
        # while there is nothing to undo) so the answers above it never move.
        W["undo"] = tk.Frame(self.root, bg=UNDO_BG)
        W["undo"].place(x=0, y=box_.undo_y, width=w, height=box_.undo_h)
        W["undo_text"] = tk.Label(
            W["undo"],
            font=self.fonts["status"],
            bg=UNDO_BG,
            fg="#ffffff",
            anchor="w",
            justify="left",
            wraplength=int(w * 0.7),
        )
        W["undo_text"].place(x=8, y=0, width=box_.undo_x - 12, height=box_.undo_h)
        W["undo_button"] = self._flat_button(W["undo"], "Undo", on_undo, bg="#ffffff")
        self._undo_place = dict(
            x=box_.undo_x, y=BUTTON_PAD, width=w - box_.undo_x - BUTTON_PAD, height=box_.undo_h - 2 * BUTTON_PAD
        )
        # The status line: always in its place, empty when there is nothing to say.
        W["status"] = tk.Label(self.root, font=self.fonts["status"], bg=ANSWERS_BG, fg="#ffffff", anchor="w", padx=8)
        W["status"].place(x=0, y=box_.status_y, width=w, height=box_.status_h)

    def _flat_button(self, parent: tk.Misc, text: str, command: Callable[[], Any], bg: str = BUTTON_BG) -> tk.Button:
        """A button that looks the same under a resting pointer as anywhere else (no "active"
        colour that reads as pre-selected), never takes the focus, and shows a press by its
        sunken edge only."""
        return tk.Button(
            parent,
            text=text,
            font=self.fonts["button"],
            bg=bg,
            fg="#000000",
            activebackground=bg,
            activeforeground="#000000",
            disabledforeground="#8a8a8a",
            relief="raised",
            overrelief="",
            bd=3,
            highlightthickness=0,
            takefocus=0,
            justify="center",
            command=command,
        )

    def _place_button(self, button: tk.Button, col: int) -> None:
        box_ = self.layout
        button.place(
            x=col * box_.button_w + BUTTON_PAD,
            y=BUTTON_PAD,
            width=box_.button_w - 2 * BUTTON_PAD,
            height=box_.answers_h - 2 * BUTTON_PAD,
        )

    # -- painting ----------------------------------------------------------------------------------
    def paint(self, view: View, others: int, recent: Recent | None) -> None:
        """Draw `view`, with the count of `others` alerts waiting and the Undo offer for `recent`."""
        b, W = view.banner, self.w
        for name in ("banner", "top", "main"):
            W[name].configure(bg=b.bg)
        W["symbol"].configure(text=b.symbol, bg=b.bg, fg=b.fg)
        # Its lines as the banner gives them, in the largest font (up to the usual) they fit in.
        lines = b.title_lines
        key = tuple(lines)
        if key not in self.title_fonts:
            self.title_fonts[key] = fitted_font(
                self.root,
                self.family,
                lines,
                self.title_width,
                (self.layout.banner_h // 2) // len(lines),
                self.fonts["title"],
            )
        W["title"].configure(text="\n".join(lines), bg=b.bg, fg=b.fg, font=self.title_fonts[key])
        W["detail"].configure(text=b.detail, bg=b.bg, fg=b.fg)
        W["item"].configure(text=b.item_text, bg=b.bg, fg=b.fg)
        W["txn"].configure(text=f"Sale {b.transaction_id}" if b.transaction_id else "", bg=b.bg, fg=b.fg)
        waiting = waiting_text(others) if view.banner.kind != BannerKind.RECORDED else ""
        W["waiting"].configure(text=waiting)
        if waiting:
            W["waiting"].pack(side="right", padx=6, pady=(6, 0))
        else:
            W["waiting"].pack_forget()
        # The buttons show or go in their fixed places; the row itself never moves.
        for col, btn in enumerate(self.buttons.values()):
            if view.pending is not None:
                btn.configure(state="normal" if view.pending.alert is not None else "disabled")
                if not btn.winfo_ismapped():
                    self._place_button(btn, col)
            else:
                btn.place_forget()
        if recent is not None:
            W["undo_text"].configure(
                text=f"Recorded for sale {recent.ack.transaction_id or '–'}: "
                f"{ANSWER_LABELS.get(recent.ack.answer, recent.ack.answer)}"
            )
            W["undo_button"].place(**self._undo_place)
        else:
            W["undo_text"].configure(text="")
            W["undo_button"].place_forget()

    def show_recording(self, not_recording: bool) -> None:
        if not not_recording:
            self.w["recording"].pack_forget()
        else:
            # Right-most in the top line, before the "N waiting" count.
            self.w["recording"].pack(side="right", padx=(4, 8), pady=(4, 0))

    def set_status(self, text: str | None, error: bool = False) -> None:
        """The status line's words (None: empty). The line keeps its place either way."""
        self.w["status"].configure(text=text or "", fg="#ffd0d0" if error else "#ffffff")

    def measure(self, view: View, undo: bool, not_recording: bool) -> dict[str, Any]:
        """The snapshot's fields for `view` on screen: its words, colours and where each part is."""
        r, b, W = self.root, view.banner, self.w
        return dict(
            kind=b.kind,
            title=b.title,
            symbol=b.symbol,
            detail=b.detail,
            item=b.item_text,
            waiting=W["waiting"].cget("text"),
            bg=b.bg,
            fg=b.fg,
            geometry=(r.winfo_rootx(), r.winfo_rooty(), r.winfo_width(), r.winfo_height()),
            title_box=box(W["title"]),
            symbol_box=box(W["symbol"]),
            banner_box=box(W["banner"]),
            waiting_box=box(W["waiting"]) if W["waiting"].cget("text") else None,
            buttons={a: box(btn) for a, btn in self.buttons.items()} if view.pending else {},
            undo=box(W["undo_button"]) if undo else None,
            undo_text=W["undo_text"].cget("text") if undo else None,
            recording_box=box(W["recording"]) if not_recording else None,
        )
