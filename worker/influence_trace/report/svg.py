"""Inline SVG pieces of the HTML report: the diverging colour scale and score histograms.

Drawn in Python as plain SVG text so the report needs no plotting library and no script to show its
figures; the colour function here is the same one the page's script uses for tokens (kept in sync by
the browser test, which checks a token's computed colour).
"""

from __future__ import annotations

from html import escape

import numpy as np

# Diverging scale: negative -> blue, zero -> white, positive -> red (ends as in ColorBrewer's RdBu).
BLUE = (33, 102, 172)
RED = (178, 24, 43)
WHITE = (255, 255, 255)
# Accepted and rejected responses: the response cards' colours, never red/blue (those mean score sign)
ACCEPTED = "#1a9850"
REJECTED = "#7b3294"
WIDTH, HEIGHT, PAD = 640, 170, 30


def colour(t: float) -> str:
    """CSS colour of a score already divided by the clip value (clamped to [-1, 1])."""
    t = max(-1.0, min(1.0, t))
    end = RED if t > 0 else BLUE
    mix = [round(w + abs(t) * (e - w)) for w, e in zip(WHITE, end, strict=True)]
    return f"rgb({mix[0]},{mix[1]},{mix[2]})"


def token_histogram(values: np.ndarray, clip: float, bins: int = 40) -> str:
    """Histogram of finite token scores over [-clip, clip]; scores beyond fall in the edge bins."""
    finite = values[np.isfinite(values)]
    counts = _counts(np.clip(finite, -clip, clip), clip, bins)
    centres = np.linspace(-clip, clip, bins, endpoint=False) + clip / bins
    fills = [colour(c / clip) for c in centres]
    title = f"Token scores ({finite.size:,} tokens; beyond ±{clip:.3g} counted at the edges)"
    return _svg(title, [(counts, fills, "#555", 1.0)], clip, "token score")


def mean_histogram(accepted: np.ndarray, rejected: np.ndarray, bins: int = 30) -> str:
    """Overlaid histograms of response mean scores, accepted against rejected: do they separate?"""
    both = np.concatenate([accepted, rejected])
    both = both[np.isfinite(both)]
    span = float(np.abs(both).max()) if both.size else 1.0
    span = span or 1.0
    series = [
        (_counts(rejected[np.isfinite(rejected)], span, bins), [REJECTED] * bins, REJECTED, 0.45),
        (_counts(accepted[np.isfinite(accepted)], span, bins), [ACCEPTED] * bins, ACCEPTED, 0.45),
    ]
    title = (f"Response mean scores: accepted (green, {accepted.size}) vs rejected (purple, "
             f"{rejected.size})")
    return _svg(title, series, span, "mean token score of a response")


def _counts(values: np.ndarray, span: float, bins: int) -> np.ndarray:
    counts, _ = np.histogram(values, bins=bins, range=(-span, span))
    return counts


def _svg(title: str, series: list[tuple[np.ndarray, list[str], str, float]], span: float,
         xlabel: str) -> str:
    top = max((int(c.max()) for c, *_ in series if c.size), default=0) or 1
    plot_w, plot_h = WIDTH - 2 * PAD, HEIGHT - 2 * PAD
    parts = [f'<svg class="hist" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
             f'role="img" aria-label="{escape(title)}"><title>{escape(title)}</title>']
    for counts, fills, stroke, opacity in series:
        bar_w = plot_w / len(counts)
        for i, (count, fill) in enumerate(zip(counts, fills, strict=True)):
            h = plot_h * count / top
            parts.append(f'<rect x="{PAD + i * bar_w:.1f}" y="{PAD + plot_h - h:.1f}" width="{bar_w:.1f}" '
                         f'height="{h:.1f}" fill="{fill}" fill-opacity="{opacity}" stroke="{stroke}" '
                         f'stroke-width="0.5"><title>{count}</title></rect>')
    base, mid = PAD + plot_h, PAD + plot_w / 2
    parts += [
        f'<line x1="{PAD}" y1="{base}" x2="{WIDTH - PAD}" y2="{base}" stroke="#333"/>',
        f'<line x1="{mid}" y1="{PAD}" x2="{mid}" y2="{base}" stroke="#999" stroke-dasharray="3,3"/>',
        f'<text x="{PAD}" y="{base + 14}" text-anchor="middle">{-span:.3g}</text>',
        f'<text x="{mid}" y="{base + 14}" text-anchor="middle">0</text>',
        f'<text x="{WIDTH - PAD}" y="{base + 14}" text-anchor="middle">{span:.3g}</text>',
        f'<text x="{mid}" y="{base + 27}" text-anchor="middle">{escape(xlabel)}</text>',
        f'<text x="{PAD}" y="{PAD - 8}">{escape(title)} · max bin {top:,}</text>',
        "</svg>",
    ]
    return "".join(parts)


def validation_scatter(predicted: list[float], actual: list[float], lds: float | None) -> str:
    """Predicted against actual change of the contrast objective, one dot per subset update (LDS)."""
    title = f"Subset updates ({len(predicted)}): predicted vs actual change · LDS " + (
        "–" if lds is None else f"{lds:.3f}")
    size, pad = 360, 46
    plot = size - 2 * pad

    def scale(values: list[float]) -> tuple[float, float]:
        lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
        return (lo, hi) if hi > lo else (lo - 1.0, lo + 1.0)

    (x0, x1), (y0, y1) = scale(predicted), scale(actual)
    parts = [f'<svg class="scatter" viewBox="0 0 {size} {size}" width="{size}" height="{size}" role="img" '
             f'aria-label="{escape(title)}"><title>{escape(title)}</title>',
             f'<rect x="{pad}" y="{pad}" width="{plot}" height="{plot}" fill="none" stroke="#333"/>']
    for p, a in zip(predicted, actual, strict=True):
        cx = pad + plot * (p - x0) / (x1 - x0)
        cy = pad + plot * (1 - (a - y0) / (y1 - y0))
        parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="3" fill="#444" fill-opacity="0.7">'
                     f'<title>predicted {p:.4g}, actual {a:.4g}</title></circle>')
    base = pad + plot
    parts += [
        f'<text x="{pad}" y="{base + 14}" text-anchor="middle">{x0:.3g}</text>',
        f'<text x="{pad + plot}" y="{base + 14}" text-anchor="middle">{x1:.3g}</text>',
        f'<text x="{pad + plot / 2}" y="{base + 30}" text-anchor="middle">'
        "predicted (sum of kept scores)</text>",
        f'<text x="{pad - 4}" y="{base}" text-anchor="end">{y0:.3g}</text>',
        f'<text x="{pad - 4}" y="{pad + 4}" text-anchor="end">{y1:.3g}</text>',
        f'<text x="12" y="{pad + plot / 2}" transform="rotate(-90 12 {pad + plot / 2})" '
        f'text-anchor="middle">actual change of the objective</text>',
        f'<text x="{pad}" y="{pad - 10}">{escape(title)}</text>',
        "</svg>",
    ]
    return "".join(parts)
