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
        (_counts(rejected[np.isfinite(rejected)], span, bins), ["#2166ac"] * bins, "#2166ac", 0.45),
        (_counts(accepted[np.isfinite(accepted)], span, bins), ["#b2182b"] * bins, "#b2182b", 0.45),
    ]
    title = f"Response mean scores: accepted (red, {accepted.size}) vs rejected (blue, {rejected.size})"
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
