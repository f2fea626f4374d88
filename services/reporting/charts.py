"""Charts drawn on the server as SVG: the dashboard needs no script, no CDN, no internet."""
from __future__ import annotations

from html import escape

from markupsafe import Markup

W, BAR_H, GAP, LEFT = 640, 26, 10, 170
COLOURS = {"primary": "#1f6f8b", "secondary": "#e39b2d", "ok": "#2e8b57", "grid": "#d0d7de", "text": "#24292f"}


def _svg(height: int, body: list[str], label: str) -> Markup:
    return Markup(f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {height}" width="{W}" '
                  f'height="{height}" role="img" aria-label="{escape(label)}" class="chart">'
                  f'<rect width="{W}" height="{height}" fill="#ffffff"/>{"".join(body)}</svg>')


def _fmt_pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}".replace(".", ",") + " %"


def hbars(items: list[tuple[str, float | None]], label: str, colour: str = COLOURS["primary"]) -> Markup:
    """Horizontal bars of a percentage (0-100, longer bars clipped at the frame) per item."""
    if not items:
        return _svg(40, ['<text x="10" y="25" font-size="14" fill="#57606a">Belum ada data</text>'], label)
    plot = W - LEFT - 90
    h = len(items) * (BAR_H + GAP) + 30
    body = [f'<line x1="{LEFT + plot * x // 100}" y1="5" x2="{LEFT + plot * x // 100}" y2="{h - 20}" '
            f'stroke="{COLOURS["grid"]}"/><text x="{LEFT + plot * x // 100}" y="{h - 5}" font-size="11" '
            f'text-anchor="middle" fill="#57606a">{x} %</text>' for x in (0, 25, 50, 75, 100)]
    for i, (name, pct) in enumerate(items):
        y = 5 + i * (BAR_H + GAP)
        width = plot * min(max(pct or 0, 0), 100) / 100
        body.append(f'<text x="{LEFT - 8}" y="{y + BAR_H * 0.7}" font-size="13" text-anchor="end" '
                    f'fill="{COLOURS["text"]}">{escape(name)}</text>'
                    f'<rect class="bar" x="{LEFT}" y="{y}" width="{width:.1f}" height="{BAR_H}" fill="{colour}">'
                    f'<title>{escape(name)}: {_fmt_pct(pct)}</title></rect>'
                    f'<text x="{LEFT + width + 6:.1f}" y="{y + BAR_H * 0.7}" font-size="13" '
                    f'fill="{COLOURS["text"]}">{_fmt_pct(pct)}</text>')
    return _svg(h, body, label)


def columns(months: list[str], series: list[tuple[str, list[int], str]], label: str) -> Markup:
    """Grouped columns per month (e.g. complaints received and resolved), with a legend."""
    h, top, bottom, left = 260, 30, 40, 40
    plot_w, plot_h = W - left - 10, h - top - bottom
    peak = max([1] + [v for _n, vals, _c in series for v in vals])
    peak += peak % 2  # an even top keeps the middle grid line on a whole number
    body = []
    for frac in (0, 0.5, 1):
        y = top + plot_h * (1 - frac)
        body.append(f'<line x1="{left}" y1="{y:.1f}" x2="{W - 10}" y2="{y:.1f}" stroke="{COLOURS["grid"]}"/>'
                    f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end" fill="#57606a">'
                    f'{round(peak * frac)}</text>')
    slot = plot_w / max(len(months), 1)
    bar = slot * 0.8 / max(len(series), 1)
    for i, m in enumerate(months):
        x0 = left + i * slot + slot * 0.1
        body.append(f'<text x="{left + i * slot + slot / 2:.1f}" y="{h - bottom + 16}" font-size="11" '
                    f'text-anchor="middle" fill="#57606a">{escape(m[2:])}</text>')
        for j, (name, vals, colour) in enumerate(series):
            bh = plot_h * vals[i] / peak
            body.append(f'<rect class="bar" x="{x0 + j * bar:.1f}" y="{top + plot_h - bh:.1f}" width="{bar:.1f}" '
                        f'height="{bh:.1f}" fill="{colour}"><title>{escape(name)} {escape(m)}: {vals[i]}</title></rect>')
    for j, (name, _vals, colour) in enumerate(series):
        body.append(f'<rect x="{left + j * 150}" y="6" width="14" height="14" fill="{colour}"/>'
                    f'<text x="{left + j * 150 + 20}" y="18" font-size="13" fill="{COLOURS["text"]}">'
                    f'{escape(name)}</text>')
    return _svg(h, body, label)


def dashboard(r: dict, trend: list[dict]) -> dict[str, Markup]:
    return {
        "realisation": hbars([(s["label"], s["realisation_pct"]) for s in r["funding_sources"]],
                             "Realisasi anggaran per sumber dana"),
        "complaints": columns([t["period"] for t in trend],
                              [("Diterima", [t["received"] for t in trend], COLOURS["secondary"]),
                               ("Selesai", [t["resolved"] for t in trend], COLOURS["ok"])],
                              "Pengaduan per bulan"),
        "visits": hbars([(c["companion"], c["coverage_pct"]) for c in r["visits"]["companions"]],
                        "Cakupan kunjungan rumah per pendamping", COLOURS["ok"]),
    }
