"""Plain-language lines from verdicts, for ``ringprobe run``'s closing summary and reports."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.rules import app_name

# The controls' row heads its line as what it is, not as an app.
_HEADS = {"control": "Neutral controls"}


def explain(verdicts_df: pd.DataFrame) -> list[str]:
    """One line per row of ``verdicts_df`` (one per run and app), in the frame's row order, e.g.
    ``WhatsApp: blocked (tcp, ip_drop) — 34 of 34 WhatsApp endpoints unusable: ...``.

    The order is the frame's so that ``table["summary"] = explain(table)`` lines up; ``verdicts``
    already returns each run's apps in the stable order whatsapp, telegram, signal, control,
    then others.
    """
    if verdicts_df.empty:
        return []
    index = verdicts_df.index
    layer = verdicts_df["layer"].astype("string").fillna("")
    mechanism = verdicts_df["mechanism"].astype("string").fillna("")
    # " (tcp, ip_drop)", " (tls)" or nothing, by which of the two are known.
    both = " (" + layer + ", " + mechanism + ")"
    only_layer = " (" + layer + ")"
    detail = np.where(mechanism != "", both, np.where(layer != "", only_layer, ""))
    apps = verdicts_df["app"].astype(str)
    heads = np.where(apps.isin(list(_HEADS)), apps.map(_HEADS), app_name(apps))
    head = pd.Series(heads, index=index, dtype=object).astype(str)
    lines = (
        head
        + ": "
        + verdicts_df["verdict"].astype(str)
        + pd.Series(detail, index=index, dtype=object).astype(str)
        + " — "
        + verdicts_df["evidence"].astype(str)
    )
    return [str(line) for line in lines]


__all__ = ["explain"]
