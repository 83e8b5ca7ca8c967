"""Figure helpers: one style, saved as PNG under results/figures and shown inline."""

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from sklearn.metrics import roc_auc_score, roc_curve

from ..analyses.classification import FULL_RANGE
from ..analyses.reference import PAPER_N, PAPER_VOTE_CURVES
from ..core.paths import results_dir
from ..evaluation.calibration import ece, reliability, risk_coverage

sns.set_theme(context="notebook", style="whitegrid")


def save(fig, name: str, show: bool = True):
    path = results_dir() / "figures" / f"{name}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    if show and "inline" in matplotlib.get_backend().lower():
        plt.show()
    else:
        plt.close(fig)
    return path


def image_grid(images: np.ndarray, rows: int, cols: int, titles=None, row_labels=None, scale: float = 1.4):
    """images: (rows*cols, H, W, C) uint8."""
    fig, axes = plt.subplots(rows, cols, figsize=(cols * scale, rows * scale), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(images):
            im = images[i]
            ax.imshow(im[..., 0] if im.shape[-1] == 1 else im, cmap="gray", vmin=0, vmax=255)
            if titles is not None:
                ax.set_title(titles[i], fontsize=7)
    if row_labels is not None:
        for r, label in enumerate(row_labels):
            axes[r, 0].text(-0.1, 0.5, label, transform=axes[r, 0].transAxes, ha="right", va="center", fontsize=8)
    fig.tight_layout()
    return fig


def class_examples(data, n: int = 8, seed: int = 0):
    """n training images per class, picked by a seeded draw."""
    rng = np.random.default_rng(seed)
    s = data.splits["train"]
    picks = [rng.choice(np.flatnonzero(s.labels == c), n, replace=False) for c in range(data.n_classes)]
    return image_grid(np.concatenate([s.images[p] for p in picks]), data.n_classes, n, row_labels=data.class_names)


def intensity_distributions(data):
    """Per-class distribution of each training image's mean intensity (per channel for colour images)."""
    s = data.splits["train"]
    means = s.images.reshape(len(s), -1, s.images.shape[-1]).mean(1)
    chans = ["grey"] if means.shape[1] == 1 else ["red", "green", "blue"]
    df = pd.DataFrame(
        [
            {"class": data.class_names[label], "channel": chans[c], "mean intensity": m[c]}
            for label, m in zip(s.labels, means)
            for c in range(len(chans))
        ]
    )
    g = sns.displot(
        df,
        x="mean intensity",
        hue="class",
        col="channel",
        kind="kde",
        common_norm=False,
        height=2.6,
        aspect=1.2,
        fill=True,
    )
    g.fig.suptitle(f"{data.task}: mean intensity per training image", y=1.05)
    return g.fig


def training_curves(history, title: str):
    h = pd.DataFrame(history)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(h["step"], h["train_loss"], label="train (batch mean)", alpha=0.7)
    for col in [c for c in h.columns if c.startswith("val_loss_")]:
        v = h[["step", col]].dropna()
        ax.plot(v["step"], v[col], "o-", label=col.replace("val_loss_", "val: "))
    ax.set(xlabel="step", ylabel="diffusion loss", title=title, yscale="log")
    ax.legend(fontsize=8)
    return fig


def roc_curves(curves: dict, title: str):
    """curves: label -> (y_true, score)."""
    fig, ax = plt.subplots(figsize=(4, 4))
    for label, (y, s) in curves.items():
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(fpr, tpr, label=f"{label} (AUC {roc_auc_score(y, s):.3f})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title=title)
    ax.legend(fontsize=7, loc="lower right")
    return fig


def voting_vs_draws(table, pairs, task: str):
    """Claim 2 at a glance: accuracy and AUC of each rule against N (95% bootstrap bands, ResNet-18 dashed), the
    paired vote - mean accuracy difference with its CI, and the paper's CheXpert curves (other data) for shape."""
    t = table[
        (table.task == task) & (table.source == "all") & (table.t_range == FULL_RANGE) & (table.model != "resnet18")
    ]
    base = table[(table.task == task) & (table.model == "resnet18") & (table.source == "all")]
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.4))
    ticks = sorted(t.n_draws.unique())
    for ax, m in zip(axes[:2], ("accuracy", "auc")):
        for rule, g in t.groupby("rule"):
            g = g.sort_values("n_draws")
            ax.plot(g.n_draws, g[m], "o-", label=f"diffusion, {rule} rule")
            ax.fill_between(g.n_draws, g[f"{m}_ci_low"], g[f"{m}_ci_high"], alpha=0.2)
        if len(base):
            ax.axhline(base[m].iloc[0], color="k", ls="--", lw=1, label="ResNet-18")
        ax.set(xscale="log", xlabel="draws N (timestep, noise)", ylabel=m, title=f"{task}: {m} vs N")
        ax.set_xticks(ticks, [str(k) for k in ticks])
    axes[0].legend(fontsize=7)
    d = pairs[pairs.task == task].sort_values("n_draws")
    axes[2].plot(d.n_draws, d.accuracy_diff, "o-", color="C2")
    axes[2].fill_between(d.n_draws, d.accuracy_diff_ci_low, d.accuracy_diff_ci_high, alpha=0.25, color="C2")
    axes[2].axhline(0, color="k", lw=0.8)
    axes[2].set(xscale="log", xlabel="draws N", ylabel="vote - mean accuracy", title="paired difference (95% CI)")
    axes[2].set_xticks(ticks, [str(k) for k in ticks])
    for (model, rule), acc in PAPER_VOTE_CURVES.items():
        if model == "UNet":
            axes[3].plot(PAPER_N, acc, "o-" if rule == "vote" else "s--", ms=3, label=f"paper UNet, {rule}")
    axes[3].set(xscale="log", xlabel="draws N", ylabel="accuracy (%)", title="the paper: CheXpert, 256 px (other data)")
    axes[3].set_xticks(PAPER_N, [str(k) for k in PAPER_N])
    axes[3].legend(fontsize=7)
    fig.tight_layout()
    return fig


def _show(ax, img, title=None):
    """img: (C, H, W) in [-1, 1]."""
    im = np.clip((np.asarray(img).transpose(1, 2, 0) + 1) / 2, 0, 1)
    ax.imshow(im[..., 0] if im.shape[-1] == 1 else im, cmap="gray", vmin=0, vmax=1)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=7)


def explanation_panel(x, diff_maps, cams, cf, case_of, class_names, title, cf_maps=None):
    """One row per image: input; error-difference map (ours); counterfactual - input towards the other class (the
    paper's map); Grad-CAM of the ResNet; the one-step x0 estimate and the guided counterfactual under each class.
    cams, cf_maps and cf["guided"] are optional."""
    overlays = [("error diff. (ours)", diff_maps, "RdBu_r")]
    if cf_maps is not None:
        overlays.append(("CF - input (paper)", cf_maps, "PuOr_r"))
    if cams is not None:
        overlays.append(("Grad-CAM", cams, "jet"))
    recon = [(f"x0 | {n}", cf["one_step"][:, c]) for c, n in enumerate(class_names)]
    if "guided" in cf:
        recon += [(f"CF | {n}", cf["guided"][:, c]) for c, n in enumerate(class_names)]
    cols = 1 + len(overlays) + len(recon)
    fig, axes = plt.subplots(len(x), cols, figsize=(cols * 1.25, len(x) * 1.3), squeeze=False)
    for r in range(len(x)):
        ax = axes[r]
        _show(ax[0], x[r], "input" if r == 0 else None)
        ax[0].text(-0.15, 0.5, case_of[r], transform=ax[0].transAxes, ha="right", va="center", fontsize=7)
        h, w = np.asarray(x[r]).shape[-2:]  # latent maps are coarser than the image: stretch them over it
        for j, (name, maps, cmap) in enumerate(overlays, start=1):
            _show(ax[j], x[r], name if r == 0 else None)
            if cmap == "jet":
                ax[j].imshow(maps[r], cmap=cmap, alpha=0.45, extent=(-0.5, w - 0.5, h - 0.5, -0.5))
            else:
                lim = np.abs(maps).max() or 1
                ax[j].imshow(maps[r], cmap=cmap, vmin=-lim, vmax=lim, alpha=0.6, extent=(-0.5, w - 0.5, h - 0.5, -0.5))
        for j, (name, imgs) in enumerate(recon, start=1 + len(overlays)):
            _show(ax[j], imgs[r], name if r == 0 else None)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def perturbation_curves(curves: dict, title: str):
    """curves: (judge, fill, mode, method) -> mean normalised curve; one row of panels per (judge, fill)."""
    panels = list(dict.fromkeys((j, f) for j, f, _, _ in curves))
    fig, axes = plt.subplots(len(panels), 2, figsize=(8, 2.6 * len(panels)), squeeze=False)
    for (judge, fill, mode, method), c in curves.items():
        ax = axes[panels.index((judge, fill)), 0 if mode == "deletion" else 1]
        ax.plot(np.linspace(0, 1, len(c)), c, "o-", ms=2, label=method)
    for r, (judge, fill) in enumerate(panels):
        for k, mode in enumerate(("deletion", "insertion")):
            axes[r, k].set(
                xlabel=f"fraction of patches {'removed' if mode == 'deletion' else 'inserted'}",
                ylabel="normalised score",
                title=f"{judge} judge, {fill} fill: {mode}",
            )
            axes[r, k].legend(fontsize=6)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def randomisation_cascade(cascades: dict, title: str):
    """cascades: method -> rows (stage, stage_name, rho per image); mean Spearman after each cumulative stage."""
    fig, ax = plt.subplots(figsize=(7, 3))
    for method, rows in cascades.items():
        ax.plot([r["stage"] for r in rows], [np.nanmean(r["rho"]) for r in rows], "o-", label=method)
        for r in rows:
            ax.annotate(r["stage_name"], (r["stage"], np.nanmean(r["rho"])), fontsize=5, rotation=30)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set(xlabel="stages re-initialised (from the output down)", ylabel="Spearman of |map| with trained", title=title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def reliability_diagrams(curves: dict, title: str, n_bins: int = 10):
    """curves: (model, score) -> uncertainty.ScoreCurve; scores with a confidence get a panel with before/after
    temperature scaling."""
    items = [(k, v) for k, v in curves.items() if v.confidence is not None]
    fig, axes = plt.subplots(1, len(items), figsize=(3.2 * len(items), 3.2), squeeze=False)
    for ax, ((model, score), curve) in zip(axes[0], items):
        for label, c in (("raw", curve.confidence), ("temperature-scaled", curve.calibrated)):
            pts = np.array(reliability(c, curve.correct, n_bins))
            ax.plot(pts[:, 0], pts[:, 1], "o-", ms=3, label=f"{label} (ECE {ece(c, curve.correct, n_bins):.3f})")
        ax.plot([0, 1], [0, 1], "k--", lw=0.8)
        ax.set(xlim=(0, 1.02), ylim=(0, 1.02), xlabel="confidence", ylabel="accuracy", title=f"{model}: {score}")
        ax.legend(fontsize=6, loc="upper left")
    fig.suptitle(f"{title} (about equal-mass bins that never split equal confidences, {n_bins})", fontsize=9)
    fig.tight_layout()
    return fig


def risk_coverage_curves(curves: dict, title: str):
    """curves: (model, score) -> uncertainty.ScoreCurve."""
    fig, ax = plt.subplots(figsize=(4.5, 3.4))
    for (model, score), curve in curves.items():
        cov, risk = risk_coverage(curve.uncertainty, curve.correct)
        ax.plot(cov, risk, label=f"{model}: {score}")
    ax.set(xlabel="coverage (share of cases the model decides)", ylabel="selective risk (error rate)", title=title)
    ax.legend(fontsize=6)
    return fig


def accuracy_vs_removed(df, task: str):
    """The paper's uncertainty plot: accuracy of the predictions kept after removing the most uncertain share."""
    fig, ax = plt.subplots(figsize=(4.8, 3.4))
    for (model, score), g in df.groupby(["model", "score"], sort=False):
        ax.plot(100 * g.removed, g.accuracy, "o-", ms=3, label=f"{model}: {score}")
    ax.set(
        xlabel="most uncertain test predictions removed (%)",
        ylabel="accuracy of the rest",
        title=f"{task}: accuracy vs removed",
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def uncertainty_vs_draws(df, task: str):
    fig, axes = plt.subplots(1, 3, figsize=(10, 3))
    for ax, col, label in zip(
        axes,
        ("error_auroc", "mean_vote_fraction", "acc_at_80_coverage"),
        ("error-detection AUROC", "mean winning vote share", "accuracy at 80% coverage"),
    ):
        ax.plot(df.n_draws, df[col], "o-")
        if f"{col}_ci_low" in df:
            ax.fill_between(df.n_draws, df[f"{col}_ci_low"], df[f"{col}_ci_high"], alpha=0.2)
        ax.set(xscale="log", xlabel="draws K", ylabel=label)
        ax.set_xticks(df.n_draws, [str(k) for k in df.n_draws])
    fig.suptitle(f"{task}: vote-based uncertainty as the number of draws grows", fontsize=9)
    fig.tight_layout()
    return fig


def early_stopping(table):
    """Speed-up of early stopping against the share of images whose vote changes, per task and split."""
    t = table.assign(
        rule=[("exact" if s == "exact" else f"α={a:g}") for s, a in zip(table.stopping, table.alpha)],
        changed=100 * table.changed_vs_full_vote / table.n_images,
    )
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for ax, y, label in [
        (axes[0], "speedup", "fewer UNet evaluations (x)"),
        (axes[1], "changed", "images whose vote changes (%)"),
    ]:
        sns.barplot(t, x="rule", y=y, hue=(t.task + " " + t.split).rename("task, split"), ax=ax)
        ax.set(xlabel="stopping rule", ylabel=label)
    axes[0].axhline(2, ls="--", c="grey", lw=1)
    axes[1].legend_.remove()
    fig.tight_layout()
    return fig


def seed_spread(runs, task: str):
    """Notebook 09: each run's headline AUC and paired vote - mean accuracy (95% CIs over test images), grouped by
    the source of variance that changes between runs (draw replicates, training seeds)."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.4))
    labels = [
        f"draws {r.draw_replicate}" if r.variance_source == "draws" else f"train {r.training_seed}"
        for r in runs.itertuples()
    ]
    colors = ["C0" if s == "draws" else "C1" for s in runs.variance_source]
    for ax, m, title in zip(
        axes,
        ("auc", "vote_minus_mean_accuracy", "minus_resnet_auc"),
        ("headline AUC", "vote - mean accuracy (paired)", "diffusion - ResNet-18 AUC (paired)"),
    ):
        x = np.arange(len(runs))
        v = runs[m].to_numpy(float)
        err = np.abs(np.vstack([v - runs[f"{m}_ci_low"], runs[f"{m}_ci_high"] - v]))
        for i in x:
            ax.errorbar(i, v[i], yerr=err[:, i : i + 1], fmt="o", color=colors[i], capsize=3)
        if m != "auc":
            ax.axhline(0, color="k", lw=0.8)
        ax.set_xticks(x, labels, rotation=45, ha="right", fontsize=8)
        ax.set(title=f"{task}: {title}")
    fig.tight_layout()
    return fig


REPLICATE_MARKS = {"other training seeds": ("v", "tab:blue"), "other draw blocks": ("|", "tab:green"),
                   "precision re-runs": ("x", "tab:red")}  # fmt: skip


def claims_forest(rows: list[dict], tasks: list[str], path, margin: float):
    """SUMMARY.md's figure: each claim's headline paired difference (> 0 favours the paper) with its 95% CI, one
    panel per task; the other runs as small marks; rows that are not counted (own-model judges) or not testable
    greyed and labelled; claim 1's non-inferiority margin drawn on its AUC rows only."""
    labels = list(dict.fromkeys(fr[0] for r in rows for fr in r["figure_rows"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(6.0 * len(tasks), 0.5 * len(labels) + 2.0), sharey=True)
    axes = np.atleast_1d(axes)
    for ax, task in zip(axes, tasks):
        ax.axvline(0, color="black", lw=0.8)
        for r in (r for r in rows if r["task"] == task):
            for label, v, lo, hi, *flag in r["figure_rows"]:
                y = labels.index(label)
                if label.startswith("1 · AUC"):
                    ax.plot([-margin, -margin], [y - 0.35, y + 0.35], ls=":", color="grey", lw=1.2)
                if flag and flag[0] == "not testable":  # no point estimate: its scale would mislead
                    ax.text(0, y, "  not testable", va="center", fontsize=8, color="grey")
                    continue
                colour = "silver" if flag else "black"
                ax.errorbar(v, y, xerr=[[v - lo], [hi - v]], fmt="o", color=colour, capsize=3, ms=5)
                if flag:
                    ax.annotate(flag[0], (v, y), xytext=(0, 7), textcoords="offset points", ha="center",
                                fontsize=7, color="grey")  # fmt: skip
                marks = r.get("marks", {}).get(label, {})
                for k, (what, values) in enumerate(marks.items()):
                    marker, c = REPLICATE_MARKS[what]
                    ax.scatter(values, [y + 0.2 + 0.1 * k] * len(values), marker=marker, color=c, s=22, label=what)
        ax.set_title(task, fontsize=10)
        ax.set_xlabel("paired difference with 95% CI (> 0 favours the paper)", fontsize=9)
        ax.tick_params(axis="x", labelsize=8)
    axes[0].set_yticks(range(len(labels)), labels, fontsize=8)
    axes[0].invert_yaxis()
    handles = {n: h for ax in axes for h, n in zip(*ax.get_legend_handles_labels())}
    if handles:
        fig.legend(handles.values(), handles.keys(), fontsize=8, loc="lower center", ncol=len(handles),
                   title="other runs", title_fontsize=8, bbox_to_anchor=(0.5, -0.02))  # fmt: skip
    fig.suptitle(f"The paper's four claims (dotted: claim 1's non-inferiority margin, −{margin}, chosen post hoc)",
                 fontsize=10)  # fmt: skip
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return path
