"""Small statistics shared by curation and evaluation."""
from __future__ import annotations

import numpy as np


def spearman(a, b) -> float:
    """Spearman's rank correlation; NaN when either side is constant (undefined, e.g. on a balanced subset)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    from scipy.stats import spearmanr  # imported here: scipy.stats costs ~1 s, and `tailstudy match` never needs it

    return float(spearmanr(a, b).statistic)
