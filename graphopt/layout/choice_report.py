"""The layout choice as lines of text: per compute node the layout and the figures that decided
it, then the conversions and the totals (data in graphopt.layout.select.LayoutChoice)."""
from __future__ import annotations

import math
from collections import Counter
from typing import Iterator

from graphopt.analysis import human_bytes
from graphopt.layout.kernels import NCHW
from graphopt.layout.select import LayoutChoice


def format_choice(choice: LayoutChoice) -> Iterator[str]:
    saved = choice.baseline - choice.cost
    share = f" ({saved / choice.baseline:.0%})" if choice.baseline > 0 else ""
    yield (f"layout choice: cost {human_bytes(choice.cost)}-eq, all-NCHW "
           f"{human_bytes(choice.baseline)}-eq, saves {human_bytes(saved)}-eq{share}")
    for d in choice.decisions:
        figures = ", ".join(f"{layout} {human_bytes(cost)}" for layout, cost in
                            sorted(d.kernel_costs.items(), key=lambda item: item[1])
                            if math.isfinite(cost))
        yield f"  {d.op} '{d.node}': {d.layout}  (kernel cost per layout, bytes-eq: {figures})"
        if d.reason:
            yield f"    kept {d.layout}: {d.reason}"
        if d.alternative is not None:
            gain = d.kernel_costs[d.layout] - d.kernel_costs[d.alternative]
            yield (f"    kept {d.layout}: {d.alternative} would save {human_bytes(gain)}-eq in "
                   f"the kernel but add {human_bytes(d.conversion_bytes)} of conversions")
    for c in choice.conversions:
        yield f"  convert %{c.value}: {c.src} -> {c.dst}, {human_bytes(c.bytes)}"


def summarize_choice(choice: LayoutChoice) -> Iterator[str]:
    """A few lines: convs per layout, the conversions inserted, and why the NCHW ones stayed
    (grouped: a missing blocked kernel, or conversions that cost more than the kernel saves)."""
    if not choice.decisions:
        yield "layout: every tensor NCHW (no convolution to choose a layout for)"
        return
    layouts = Counter(d.layout for d in choice.decisions)
    moved = sum(c.bytes for c in choice.conversions)
    saved = choice.baseline - choice.cost
    yield (f"layout: {', '.join(f'{n} {layout}' for layout, n in layouts.most_common())} "
           f"convs; {len(choice.conversions)} conversions moving {human_bytes(moved)}; cost "
           f"model saves {human_bytes(saved)}-eq of {human_bytes(choice.baseline)}-eq")
    reasons: Counter[str] = Counter()
    for d in choice.decisions:
        if d.reason:
            reasons[d.reason] += 1
        elif d.alternative is not None:
            reasons[f"{d.alternative} conversions would cost more than the kernel saves"] += 1
        elif d.layout == NCHW:
            reasons["its NCHW kernel is cheaper" + (f" ({d.note})" if d.note else "")] += 1
    for reason, count in reasons.most_common():
        yield f"  kept NCHW ({count} conv{'s' if count > 1 else ''}): {reason}"
