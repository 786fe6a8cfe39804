"""Charts as PNG bytes (matplotlib, off-screen): precision-recall curves and sweep plots.

Figures are built with `matplotlib.figure.Figure` and the Agg canvas directly, not pyplot, so
nothing depends on a display or on pyplot's global figure state.
"""

from __future__ import annotations

import io
import math
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

WORST = 10  # the right-hand PR panel: this many classes with the lowest AP


def _png(fig: Figure) -> bytes:
  FigureCanvasAgg(fig)
  buf = io.BytesIO()
  fig.savefig(buf, format='png', dpi=90)
  return buf.getvalue()


def _color(k: int) -> str:
  """One colour per class index, the same in both panels."""
  return f'C{k % 10}'


def pr_curves_png(result: Any, step: int) -> bytes:
  """Precision-recall curves of an `evaluate.PerClassResults` as PNG bytes.

  Left: every class with ground truth at IoU 0.50 (legend: AP50). Right: the `WORST` classes
  by AP, their precision averaged over COCO's IoU thresholds .50:.95 (the area under that
  curve is the class's AP; legend: AP). Recall and precision are fractions 0..1.
  """
  recall = np.asarray(result.recall_thresholds)
  precision = np.asarray(result.precision)  # [T, R, K], -1 without ground truth
  valid = [k for k in range(precision.shape[2]) if np.isfinite(result.ap[k])]
  iou50 = int(np.argmin(np.abs(np.asarray(result.iou_thresholds) - 0.5)))
  fig = Figure(figsize=(11, 4.8))
  left, right = fig.subplots(1, 2)
  show_legend = len(valid) <= 20
  for k in valid:
    left.plot(recall, precision[iou50, :, k], lw=1.2, color=_color(k),
              label=f'{result.names[k]} ({result.ap50[k]:.3f})')
  left.set_title(f'All {len(valid)} classes, IoU 0.50 (step {step})')
  worst = sorted(valid, key=lambda k: result.ap[k])[:WORST]
  for k in worst:
    right.plot(recall, precision[:, :, k].mean(axis=0), lw=1.5, color=_color(k),
               label=f'{result.names[k]} ({result.ap[k]:.3f})')
  right.set_title(f'Worst {len(worst)} by AP, IoU .50:.95 averaged')
  for ax, legend in ((left, show_legend), (right, True)):
    ax.set_xlabel('recall')
    ax.set_ylabel('precision')
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    if legend and ax.lines:
      ax.legend(fontsize=7, loc='upper right', title='class (AP50)' if ax is left else
                'class (AP)', title_fontsize=7)
  if not valid:
    left.text(0.5, 0.5, 'no class has ground truth', ha='center', va='center')
  fig.suptitle(f'Overall AP {result.overall_ap:.4f} (mean over classes with ground truth)')
  fig.tight_layout()
  return _png(fig)


def _as_number(value: Any) -> float | None:
  if isinstance(value, bool):
    return None
  if isinstance(value, (int, float)) and math.isfinite(value):
    return float(value)
  return None


def sweep_png(rows: Sequence[Mapping[str, Any]], metric: str, fields: Sequence[str],
              histories: Mapping[str, Sequence[Mapping[str, Any]]]) -> bytes:
  """The sweep's `metric` against each varied field and against the training step, as PNG.

  Args:
    rows: one per run: {'name', 'overrides': {field: value}, 'metrics': {metric: value}}.
    metric: the metric to plot (e.g. 'AP').
    fields: the varied override fields, one panel each: numeric values on a numeric axis (log
      when all positive and spanning more than 10x), others as categories.
    histories: run name -> its evaluations in order ({'step', metric, ...}); one line per run
      in the last panel.
  """
  n = len(fields) + 1
  cols = min(n, 3)
  nrows = int(math.ceil(n / cols))
  fig = Figure(figsize=(4.2 * cols, 3.4 * nrows))
  axes = np.atleast_1d(fig.subplots(nrows, cols)).reshape(-1)
  for ax, field in zip(axes, fields):
    points = [(r['overrides'].get(field), r.get('metrics', {}).get(metric)) for r in rows]
    points = [(v, m) for v, m in points if _as_number(m) is not None]
    # A run without this field (another part of the sweep) ran with the config's value.
    numeric = [(_as_number(v), m) for v, m in points if v is not None]
    if numeric and all(x is not None for x, _ in numeric):
      xs = np.array([x for x, _ in numeric])
      ys = np.array([m for _, m in numeric])
      ax.plot(xs, ys, 'o', alpha=0.7, label='runs')
      # Several runs share a value when other fields vary too: the line joins their means.
      levels = np.unique(xs)
      ax.plot(levels, [ys[xs == x].mean() for x in levels], '-', color='C1', label='mean')
      if len(levels) < len(xs):
        ax.legend(fontsize=7)
      if (xs > 0).all() and xs.max() > 10 * xs.min():
        ax.set_xscale('log')
    else:
      text = [('(config)' if v is None else str(v), m) for v, m in points]
      labels = sorted({t for t, _ in text})
      ax.plot([labels.index(t) for t, _ in text], [m for _, m in text], 'o')
      ax.set_xticks(range(len(labels)), labels, rotation=20, fontsize=7)
    ax.set_xlabel(field)
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    if not points:
      ax.text(0.5, 0.5, f'no run has {metric} yet', ha='center', va='center',
              transform=ax.transAxes)
  ax = axes[len(fields)]
  for name, history in histories.items():
    pts = [(h.get('step'), h.get(metric)) for h in history]
    pts = [(s, m) for s, m in pts if _as_number(s) is not None and _as_number(m) is not None]
    if pts:
      ax.plot(*zip(*pts), 'o-', ms=3, lw=1, label=name[:40])
  ax.set_xlabel('training step')
  ax.set_ylabel(metric)
  ax.set_title(f'{metric} during training')
  ax.grid(alpha=0.3)
  if ax.lines and len(ax.lines) <= 12:
    ax.legend(fontsize=6)
  for extra in axes[n:]:
    extra.set_visible(False)
  done = sum(_as_number(r.get('metrics', {}).get(metric)) is not None for r in rows)
  fig.suptitle(f'Sweep: {metric} of {done} of {len(rows)} run(s) (the others have no '
               f'evaluation yet)' if done < len(rows) else f'Sweep: {metric} of {len(rows)} runs')
  fig.tight_layout()
  return _png(fig)
