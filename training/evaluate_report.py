"""How `training.evaluate` writes its figures: the text tables it prints, and the report folder
(report.md with the gate-curve table, and its PNG plots)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.evaluate_figures import STANDARDISED, Prediction


def pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}%"


def _ci(v) -> str:
    return "" if not v else f" (95% CI {100 * v[0]:.1f}-{100 * v[1]:.1f}%)"


def format_metrics(m: dict) -> str:
    lines = [
        f"n                         {m['n']}",
        f"MAE                       {m['mae']:.3f} years",
        f"CS@5                      {pct(m['cs5'])}",
        "MAE by band:",
    ]
    for name, b in m["mae_by_band"].items():
        mae = "n/a" if b["mae"] is None else f"{b['mae']:.3f}"
        lines.append(f"  {name:>6}  n={b['n']:<5} MAE {mae}")
    lines += [
        f"13-17 estimated 25+       {pct(m['minors_13_17_estimated_25_plus'])} of {m['minors_13_17_n']}",
        f"25+ estimated under 25    {pct(m['adults_25_plus_estimated_under_25'])} of {m['adults_25_plus_n']}",
        f"13-17 approved            {pct(m['minors_13_17_approved'])} of {m['minors_13_17_n']}"
        + _ci(m.get("minors_13_17_approved_ci95")),
        f"25+ sent to ID            {pct(m['adults_25_plus_sent_to_id'])} of {m['adults_25_plus_n']}"
        + _ci(m.get("adults_25_plus_sent_to_id_ci95")),
        f"detection rate            {pct(m['detection_rate'])}",
        f"refused by quality gate   {pct(m.get('refused_by_gate'))} of faces, {pct(m.get('minors_13_17_refused_by_gate'))} of 13-17"
        f" (13-17 approved after the gate: {pct(m.get('minors_13_17_approved_after_gate'))})",
    ]
    return "\n".join(lines)


def format_breakdown(groups: dict) -> str:
    lines = []
    for col, table in groups.items():
        lines.append(f"by {col}:")
        std = STANDARDISED in next(iter(table.values()))
        lines.append(
            f"  {'group':<22} {'n':>6} {'MAE':>7} {'13-17 approved':>22} {'25+ sent to ID':>22}"
            f" {'gate refused':>13}" + (f" {'same ages':>10}" if std else "")
        )
        for name, m in table.items():
            mi = f"{pct(m['minors_13_17_approved'])} of {m['minors_13_17_n']}"
            ad = f"{pct(m['adults_25_plus_sent_to_id'])} of {m['adults_25_plus_n']}"
            lines.append(
                f"  {name:<22} {m['n']:>6} {m['mae']:>7.3f} {mi:>22} {ad:>22}"
                f" {pct(m.get('refused_by_gate')):>13}" + (f" {pct(m[STANDARDISED]):>10}" if std else "")
            )
    if any(STANDARDISED in next(iter(t.values())) for t in groups.values()):
        lines.append("(same ages: 25+ sent to ID if the group's adults had the ages of all adults in its scope)")
    return "\n".join(lines)


def _plot(folder: Path, name: str, draw) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4) if name != "pred_vs_real.png" else (5.5, 5.5))
    draw(ax)
    fig.tight_layout()
    fig.savefig(folder / name, dpi=100)
    plt.close(fig)


def write_report(
    preds: list[Prediction], m: dict, groups: dict, curve: list[dict], folder: Path, model_path: Path
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    real = np.array([p.real_age for p in preds])
    pred = np.array([p.pred for p in preds])

    def hist(ax):
        bins = np.arange(0, 106, 5)
        ax.hist(real, bins=bins, alpha=0.6, label="real age")
        ax.hist(pred, bins=bins, alpha=0.6, label="estimated age")
        ax.set(xlabel="age (years)", ylabel="photos", title="Age histogram")
        ax.legend()

    def scatter(ax):
        ax.scatter(real, pred, s=3, alpha=0.3)
        ax.plot([0, 100], [0, 100], "k--", lw=1)
        ax.axhline(25, color="r", lw=0.8)
        ax.axvline(25, color="r", lw=0.8)
        ax.set(xlabel="real age", ylabel="estimated age", title="Estimated vs real (red: challenge age 25)")

    def bands(ax):
        names = list(m["mae_by_band"])
        ax.bar(names, [m["mae_by_band"][b]["mae"] or 0 for b in names])
        ax.set(xlabel="age band", ylabel="MAE (years)", title="Error by age band")

    def gate(ax):
        pts = [
            (r["adults_25_plus_sent_to_id"], r["minors_13_17_approved"])
            for r in curve
            if r["adults_25_plus_sent_to_id"] is not None and r["minors_13_17_approved"] is not None
        ]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(np.array(xs) * 100, np.array(ys) * 100, "o-", ms=3, label="threshold moved 0..1")
        if m["adults_25_plus_sent_to_id"] is not None and m["minors_13_17_approved"] is not None:
            ax.plot(
                [100 * m["adults_25_plus_sent_to_id"]],
                [100 * m["minors_13_17_approved"]],
                "r*",
                ms=12,
                label="the card's threshold",
            )
        ax.set(xlabel="25+ sent to ID (%)", ylabel="13-17 approved (%)", title="Gate curve")
        ax.legend()

    for name, draw in (
        ("age_histogram.png", hist),
        ("pred_vs_real.png", scatter),
        ("error_by_band.png", bands),
        ("gate_curve.png", gate),
    ):
        _plot(folder, name, draw)

    md = [f"# Evaluation of {model_path.name}", "", "```", format_metrics(m), "```", ""]
    if groups:
        md += ["## By group", "", "```", format_breakdown(groups), "```", ""]
    md += [
        "## Gate curve (threshold on the calibrated P(age >= challenge age))",
        "",
        "| threshold | 13-17 approved | 25+ sent to ID |",
        "| --- | --- | --- |",
    ]
    md += [
        f"| {r['threshold']:.3f} | {pct(r['minors_13_17_approved'])} | {pct(r['adults_25_plus_sent_to_id'])} |"
        for r in curve
    ]
    md += [
        "",
        "![Gate curve](gate_curve.png)",
        "",
        "![Age histogram](age_histogram.png)",
        "",
        "![Estimated vs real](pred_vs_real.png)",
        "",
        "![Error by band](error_by_band.png)",
        "",
    ]
    (folder / "report.md").write_text("\n".join(md))
