"""Figures as PNG bytes (matplotlib's Agg backend, no pyplot state, no display needed).

Every function takes plain arrays and returns the PNG; the report embeds it and the analysis also
writes it beside the report.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np

_DPI = 100
_CMAP_CAT = "tab10"


def _figure(w: float = 5.0, h: float = 3.6):
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=_DPI, layout="constrained")


def _png(fig) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)
    return buf.getvalue()


def _colours(n: int):
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _epoch_ticks(ax, xlabel: str) -> None:
    """Epochs are whole numbers: a short run must not get ticks at 0.5, 1.5, …"""
    if xlabel == "epoch":
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def lines(x, series: dict[str, Sequence[float]], title: str, xlabel: str, ylabel: str, logy: bool = False,
          marker: str = "o", hlines: dict[str, float] | None = None, vline: float | None = None, vline_label: str = "") -> bytes:
    """Series sharing one x axis (a series shorter than ``x`` takes its first values)."""
    xs = np.asarray(x, float)
    return _line_plot({name: (xs[: len(ys)], ys) for name, ys in series.items()}, title, xlabel, ylabel, logy, marker,
                      hlines, vline, vline_label, legend=len(series) > 1 or bool(vline_label))


def multi_lines(x_series: dict[str, tuple[Sequence[float], Sequence[float]]], title: str, xlabel: str, ylabel: str,
                logy: bool = False, vline: float | None = None, vline_label: str = "", hlines: dict[str, float] | None = None) -> bytes:
    """Like :func:`lines` but each series has its own x values."""
    return _line_plot(x_series, title, xlabel, ylabel, logy, "o", hlines, vline, vline_label, legend=bool(x_series))


def _line_plot(x_series, title, xlabel, ylabel, logy, marker, hlines, vline, vline_label, legend: bool) -> bytes:
    fig = _figure()
    ax = fig.add_subplot()
    for name, (xs, ys) in x_series.items():
        ax.plot(np.asarray(xs, float), np.asarray(ys, float), marker=marker, ms=3, label=name)
    for name, y in (hlines or {}).items():
        ax.axhline(y, ls="--", lw=0.8, color="grey")
        ax.text(0.01, y, f" {name}", va="bottom", fontsize=7, color="grey", transform=ax.get_yaxis_transform())
    if vline is not None:
        ax.axvline(vline, ls=":", lw=1.2, color="crimson", label=vline_label or None)
    if logy:
        ax.set_yscale("log")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    _epoch_ticks(ax, xlabel)
    if legend:
        ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _png(fig)


def scatter(emb: np.ndarray, title: str, xlabel: str = "", ylabel: str = "", labels: np.ndarray | None = None,
            values: np.ndarray | None = None, value_label: str = "", annotate: np.ndarray | None = None,
            annotate_text: Sequence[str] | None = None, label_names: Sequence[str] | None = None) -> bytes:
    """2D scatter coloured by categorical ``labels`` or continuous ``values``; ``annotate`` marks points."""
    fig = _figure(4.8, 4.0)
    ax = fig.add_subplot()
    emb = np.asarray(emb, float)
    if emb.shape[1] == 1:
        emb = np.concatenate([emb, np.zeros_like(emb)], 1)
    s = max(2.0, min(30.0, 3000.0 / max(len(emb), 1)))
    if labels is not None:
        labels = np.asarray(labels)
        uniq = np.unique(labels)
        cols = _colours(len(uniq))
        for i, u in enumerate(uniq):
            sel = labels == u
            name = label_names[int(u)] if label_names is not None and int(u) < len(label_names) else str(u)
            ax.scatter(emb[sel, 0], emb[sel, 1], s=s, color=cols[i], label=name, alpha=0.8, linewidths=0)
        if len(uniq) <= 12:
            ax.legend(fontsize=7, markerscale=1.5, loc="best")
    elif values is not None:
        sc = ax.scatter(emb[:, 0], emb[:, 1], s=s, c=np.asarray(values, float), cmap="viridis", alpha=0.85, linewidths=0)
        fig.colorbar(sc, ax=ax, label=value_label)
    else:
        ax.scatter(emb[:, 0], emb[:, 1], s=s, color="steelblue", alpha=0.7, linewidths=0)
    if annotate is not None and len(annotate):
        pts = emb[np.asarray(annotate, int)]
        ax.scatter(pts[:, 0], pts[:, 1], s=40, facecolors="none", edgecolors="black", linewidths=1.0)
        for i, (x, y) in enumerate(pts):
            ax.annotate(annotate_text[i] if annotate_text is not None else str(i), (x, y), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    return _png(fig)


def hexbin(emb: np.ndarray, title: str, xlabel: str = "", ylabel: str = "") -> bytes:
    fig = _figure(4.8, 4.0)
    ax = fig.add_subplot()
    emb = np.asarray(emb, float)
    gs = int(np.clip(np.sqrt(len(emb)) / 1.5, 5, 50))
    hb = ax.hexbin(emb[:, 0], emb[:, 1], gridsize=gs, cmap="Blues", mincnt=1)
    fig.colorbar(hb, ax=ax, label="particles")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    return _png(fig)


def histogram(values: np.ndarray, title: str, xlabel: str, labels: np.ndarray | None = None, bins: int | None = None,
              label_names: Sequence[str] | None = None) -> bytes:
    fig = _figure()
    ax = fig.add_subplot()
    values = np.asarray(values, float)
    bins = bins or int(np.clip(np.sqrt(len(values)) * 2, 5, 60))
    if labels is None:
        ax.hist(values, bins=bins, color="steelblue")
    else:
        labels = np.asarray(labels)
        uniq = np.unique(labels)
        cols = _colours(len(uniq))
        edges = np.histogram_bin_edges(values, bins=bins)
        for i, u in enumerate(uniq):
            name = label_names[int(u)] if label_names is not None and int(u) < len(label_names) else str(u)
            ax.hist(values[labels == u], bins=edges, color=cols[i], alpha=0.6, label=name)
        ax.legend(fontsize=7)
    ax.set(title=title, xlabel=xlabel, ylabel="particles")
    return _png(fig)


def bars(values: Sequence[float], names: Sequence[str], title: str, ylabel: str, annotate_fmt: str = "{:.0%}") -> bytes:
    fig = _figure(max(3.5, 0.45 * len(values) + 1.5), 3.4)
    ax = fig.add_subplot()
    x = np.arange(len(values))
    ax.bar(x, values, color=_colours(len(values)))
    ax.set_xticks(x, list(names), rotation=45 if len(values) > 8 else 0, fontsize=8)
    for i, v in enumerate(values):
        ax.text(i, v, annotate_fmt.format(v), ha="center", va="bottom", fontsize=7)
    ax.set(title=title, ylabel=ylabel)
    ax.set_ylim(0, max(max(values, default=0) * 1.15, 1e-6))
    return _png(fig)


def stacked_occupancy(epochs: Sequence[int], occupancy: np.ndarray, title: str) -> bytes:
    """Class occupancy per epoch as stacked areas (``occupancy (E, K)``)."""
    fig = _figure()
    ax = fig.add_subplot()
    occ = np.asarray(occupancy, float)
    ax.stackplot(np.asarray(epochs, float), occ.T, labels=[f"class {k}" for k in range(occ.shape[1])], colors=_colours(occ.shape[1]), alpha=0.85)
    ax.set(title=title, xlabel="epoch", ylabel="fraction of particles", ylim=(0, 1))
    _epoch_ticks(ax, "epoch")
    if occ.shape[1] <= 12:
        ax.legend(fontsize=7, loc="upper right")
    return _png(fig)


def _views(vol: np.ndarray) -> list[np.ndarray]:
    """Projections of a ``[z, y, x]`` volume along z, y and x (images ``[row, col]``)."""
    v = np.asarray(vol, float)
    return [v.sum(0), v.sum(1), v.sum(2)]


def _montage(tiles: list[np.ndarray], ncols: int, pad: int = 2) -> np.ndarray:
    """Tiles (each normalised to [0, 1]) on a grid, NaN between them (drawn as background)."""
    h = max(t.shape[0] for t in tiles)
    w = max(t.shape[1] for t in tiles)
    nrows = int(np.ceil(len(tiles) / ncols))
    out = np.full((nrows * (h + pad), ncols * (w + pad) - pad), np.nan)
    for i, t in enumerate(tiles):
        r, c = divmod(i, ncols)
        lo, hi = np.nanmin(t), np.nanmax(t)
        y0 = r * (h + pad) + pad  # a label strip above every row
        # rows of a tile are drawn top-down, so flip it: y grows upwards as in a plot
        out[y0: y0 + t.shape[0], c * (w + pad): c * (w + pad) + t.shape[1]] = ((t - lo) / (hi - lo) if hi > lo else 0.5)[::-1]
    return out


def volume_gallery(vols: Sequence[np.ndarray], names: Sequence[str], title: str, views: str = "z", ncols: int = 10) -> bytes:
    """Thumbnails of volumes in one image: projection along z (``views="z"``), or along z, y and x
    side by side (``"zyx"``, one row per volume). Drawn as a single montage (fast for many volumes)."""
    from matplotlib import colormaps

    n = len(vols)
    if n == 0:
        fig = _figure(3, 1)
        fig.suptitle(title + " (none)", fontsize=9)
        return _png(fig)
    if views == "zyx":
        tiles = [img for v in vols for img in _views(v)]
        cols = 3
        labels = [f"{name} ({ax})" for name in names for ax in ("z", "y", "x")]
    else:
        tiles = [np.asarray(v, float).sum(0) for v in vols]
        cols = max(1, min(ncols, n))
        labels = list(names)
    d = tiles[0].shape[0]
    pad = max(3, d // 5)
    mont = _montage(tiles, cols, pad)
    rows = int(np.ceil(len(tiles) / cols))
    scale = 1.1 if d <= 48 else 1.4
    fig = _figure(max(cols * scale + 0.3, 4.5), rows * (scale + 0.18) + 0.45)
    ax = fig.add_subplot()
    cmap = colormaps["gray"].with_extremes(bad="white")
    ax.imshow(mont, cmap=cmap, origin="upper", interpolation="nearest")
    for i, label in enumerate(labels):
        r, c = divmod(i, cols)
        ax.text(c * (d + pad) + d / 2, r * (d + pad) + pad - 0.6, label, ha="center", va="bottom", fontsize=6)
    ax.set_axis_off()
    fig.suptitle(title, fontsize=9)
    return _png(fig)


def fsc_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str, pixel_size_A: float,
               thresholds: Sequence[float] = (0.143, 0.5)) -> bytes:
    """FSC against spatial frequency (1/Å), with threshold lines."""
    fig = _figure()
    ax = fig.add_subplot()
    for name, (freq, c) in curves.items():
        ax.plot(np.asarray(freq) / pixel_size_A, c, marker="o", ms=2.5, label=name)
    for t in thresholds:
        ax.axhline(t, ls="--", lw=0.8, color="grey")
        ax.text(0.0, t, f" {t:g}", va="bottom", fontsize=7, color="grey")
    ax.axhline(0, lw=0.5, color="black")
    ax.set(title=title, xlabel="spatial frequency (1/Å)", ylabel="FSC", ylim=(-0.2, 1.05))
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _png(fig)


def heatmap(matrix: np.ndarray, row_names: Sequence[str], col_names: Sequence[str], title: str, fmt: str = "{:.2f}") -> bytes:
    m = np.asarray(matrix, float)
    fig = _figure(max(3.0, 0.6 * m.shape[1] + 2), max(2.5, 0.4 * m.shape[0] + 1.5))
    ax = fig.add_subplot()
    im = ax.imshow(m, cmap="viridis", aspect="auto")
    ax.set_xticks(range(m.shape[1]), list(col_names), fontsize=7, rotation=45 if m.shape[1] > 5 else 0)
    ax.set_yticks(range(m.shape[0]), list(row_names), fontsize=7)
    if m.size <= 200:
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                ax.text(j, i, fmt.format(m[i, j]), ha="center", va="center", fontsize=6, color="white")
    fig.colorbar(im, ax=ax)
    ax.set_title(title, fontsize=9)
    return _png(fig)
