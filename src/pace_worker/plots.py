"""Validation plots (PNG, matplotlib's Agg backend): parity of energies and forces, error vs γ."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _parity_axes(ax, ref, pred, label, unit, span: Optional[tuple[float, float]] = None):
    """Axes from the lowest to the highest value of ``ref`` and ``pred`` (or ``span``), a diagonal."""
    lo, hi = span if span is not None else (float(min(ref.min(), pred.min())), float(max(ref.max(), pred.max())))
    pad = 0.03 * (hi - lo or 1.0)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.5", lw=1, ls="--", zorder=0)
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlabel(f"reference {label} ({unit})")
    ax.set_ylabel(f"predicted {label} ({unit})")
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)


def energy_parity(path: Path, ref_epa: np.ndarray, pred_epa: np.ndarray, groups: Sequence[str], rmse: float,
                  title: str) -> None:
    plt = _figure()
    fig, ax = plt.subplots(figsize=(5.5, 5.2), dpi=130)
    groups = np.asarray(groups, dtype=object)
    for g in sorted(set(groups.tolist()), key=str):
        m = groups == g
        ax.scatter(ref_epa[m], pred_epa[m], s=14, alpha=0.8, label=f"{g} ({m.sum()})")
    _parity_axes(ax, ref_epa, pred_epa, "energy", "eV/atom")
    ax.set_title(f"{title}\nenergy RMSE {rmse:.2f} meV/atom", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", title="group (structures)", title_fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def force_parity(path: Path, ref: np.ndarray, pred: np.ndarray, symbols: np.ndarray, rmse_by_element: dict,
                 title: str, span: Optional[tuple[float, float]] = None,
                 structures: Optional[tuple[int, int]] = None) -> None:
    """Force components, one colour per element; ``ref``/``pred`` shape [n_atoms, 3]. ``span``: the
    axes' range (default: these components'); ``structures``: (drawn, all) when the components
    drawn are those of a sample of the structures."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(5.5, 5.2), dpi=130)
    for el in sorted(set(symbols.tolist())):
        m = symbols == el
        rmse = rmse_by_element[el]["force_rmse_mev_per_A"]
        ax.scatter(ref[m].ravel(), pred[m].ravel(), s=4, alpha=0.5, label=f"{el}: RMSE {rmse:.0f} meV/Å")
    _parity_axes(ax, ref.ravel(), pred.ravel(), "force component", "eV/Å", span)
    drawn = ("all Cartesian components" if structures is None or structures[0] == structures[1]
             else f"components of {structures[0]} of {structures[1]} structures, evenly spaced")
    ax.set_title(f"{title}\nforces ({drawn})", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", markerscale=3)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def error_vs_gamma(path: Path, gamma_max: np.ndarray, force_rmse: np.ndarray, spearman: Optional[float],
                   title: str) -> None:
    plt = _figure()
    fig, ax = plt.subplots(figsize=(5.5, 4.5), dpi=130)
    ax.scatter(gamma_max, force_rmse, s=16, alpha=0.8)
    ax.axvline(1.0, color="tab:orange", ls="--", lw=1, label="γ = 1 (edge of the active set)")
    positive = gamma_max[gamma_max > 0]
    if len(positive) and positive.max() / positive.min() > 20:
        ax.set_xscale("log")
    ax.set_xlabel("max extrapolation grade γ of the structure")
    ax.set_ylabel("force RMSE of the structure (meV/Å)")
    rho = "n/a" if spearman is None else f"{spearman:.2f}"
    ax.set_title(f"{title}\nSpearman ρ(γ, force error) = {rho}", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


PCA_MAP_MAX_POINTS = 50000  # pool points drawn at most (evenly spaced); every pick is drawn
PCA_MAP_MAX_CATEGORIES = 12  # categories with their own colour; the rarest others share "other"


def pca_map(path: Path, pcs: np.ndarray, picks: Sequence[int], explained_ratio: Sequence[float], title: str,
            categories: Optional[Sequence[str]] = None) -> None:
    """The pool and the picks on the first two PCs. With ``categories`` (one label per point: a
    ``config_type`` or a formula) each category has its colour, for the pool (small dots) and its
    picks (large, outlined), and the legend counts picks per category; the rarest categories beyond
    ``PCA_MAP_MAX_CATEGORIES`` share "other". Without, the pool is grey and the picks red."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(7, 5.6), dpi=130)
    second = pcs[:, 1] if pcs.shape[1] > 1 else np.zeros(len(pcs))
    shown = np.linspace(0, len(pcs) - 1, min(len(pcs), PCA_MAP_MAX_POINTS)).astype(int)
    picks = np.asarray(picks, dtype=int)
    if categories is None:
        ax.scatter(pcs[shown, 0], second[shown], s=4, c="0.6", alpha=0.5, lw=0, label=f"pool ({len(pcs)})")
        ax.scatter(pcs[picks, 0], second[picks], s=18, c="tab:red", edgecolors="k", lw=0.3,
                   label=f"picks ({len(picks)})")
    else:
        labels = np.array([str(c) for c in categories], dtype=object)
        names, counts = np.unique(labels, return_counts=True)
        kept = list(names[np.argsort(-counts, kind="stable")][:PCA_MAP_MAX_CATEGORIES])
        labels = np.where(np.isin(labels, kept), labels, "other")
        if "other" in set(labels.tolist()):
            kept.append("other")
        cmap = plt.get_cmap("tab20" if len(kept) > 10 else "tab10")
        for i, name in enumerate(kept):
            colour = cmap(i % cmap.N)
            in_pool = shown[labels[shown] == name]
            in_picks = picks[labels[picks] == name]
            ax.scatter(pcs[in_pool, 0], second[in_pool], s=4, color=colour, alpha=0.35, lw=0)
            ax.scatter(pcs[in_picks, 0], second[in_picks], s=26, color=colour, edgecolors="k", lw=0.5,
                       label=f"{name}: {len(in_picks)} of {int((labels == name).sum())}")
    ax.set_xlabel(f"PC 1 ({100 * explained_ratio[0]:.0f}% of variance)")
    ax.set_ylabel(f"PC 2 ({100 * explained_ratio[1]:.0f}% of variance)" if len(explained_ratio) > 1 else "-")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="best", fontsize=7, title="picks of pool" if categories is not None else None,
              title_fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def learning_curve(path: Path, rows, target: Optional[float] = None) -> None:
    """Test force RMSE against the number of labels: one colour per strategy, one line per seed
    (marker per seed), and the target as a dashed line (rows: demo.IterationRow)."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6.5, 4.8), dpi=130)
    strategies = list(dict.fromkeys(r.strategy for r in rows))
    seeds = list(dict.fromkeys(r.seed for r in rows))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    markers = "osD^vP*X"
    for i, strategy in enumerate(strategies):
        for j, seed in enumerate(seeds):
            mine = [r for r in rows if (r.strategy, r.seed) == (strategy, seed)]
            if mine:
                ax.plot([r.labels for r in mine], [r.force_rmse_mev_per_A for r in mine],
                        color=colours[i % len(colours)], marker=markers[j % len(markers)], alpha=0.8, lw=1.3,
                        label=f"{strategy}, seed {seed}" if len(seeds) > 1 else strategy)
    if target is not None:
        ax.axhline(target, color="0.3", ls="--", lw=1, label=f"target {target:g} meV/Å")
    ax.set_xlabel("labelled structures (EMT calls)")
    ax.set_ylabel("test force RMSE (meV/Å, log scale)")
    ax.set_yscale("log")
    ax.set_title("active learning: held-out test error vs labels", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=len(strategies))
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def error_vs_time(path: Path, points: Sequence[dict], budget_s: Optional[float], title: str) -> None:
    """Validation and test errors of a budgeted fit's candidates against wall time.

    ``points``: dicts with ``time_s``, ``set`` ("validation"/"test"), ``stage`` and the RMSEs
    ``energy_rmse_mev_per_atom`` / ``force_rmse_mev_per_A``; the published candidate has ``published``."""
    plt = _figure()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=130)
    markers = {"validation": "o", "test": "s"}
    for ax, key, label in ((axes[0], "energy_rmse_mev_per_atom", "energy RMSE (meV/atom)"),
                           (axes[1], "force_rmse_mev_per_A", "force RMSE (meV/Å)")):
        for which in ("validation", "test"):
            for stage in sorted({p["stage"] for p in points}):
                series = sorted((p for p in points if p["set"] == which and p["stage"] == stage
                                 and p.get(key) is not None), key=lambda p: p["time_s"])
                if not series:
                    continue
                ax.plot([p["time_s"] for p in series], [p[key] for p in series], marker=markers[which],
                        ms=5, lw=1, ls="-" if which == "validation" else "--", label=f"{which}, {stage}")
        for p in points:
            if p.get("published") and p.get(key) is not None:
                ax.scatter([p["time_s"]], [p[key]], s=140, facecolors="none", edgecolors="k", zorder=5)
        if budget_s:
            ax.axvline(budget_s, color="0.4", ls=":", lw=1)
            ax.text(budget_s, ax.get_ylim()[1], " budget", va="top", fontsize=8, color="0.3")
        ax.set_xlabel("wall time since the start of train (s)")
        ax.set_ylabel(label)
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
    axes[1].legend(fontsize=7, loc="best")
    fig.suptitle(f"{title} (circled: published)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
