"""The layout choice as lines of text: per compute node the layout and the figures that decided
it, then the conversions and the totals (data in graphopt.layout.select.LayoutChoice)."""
from __future__ import annotations

from typing import Iterator

from graphopt.analysis import human_bytes
from graphopt.layout.select import LayoutChoice


def format_choice(choice: LayoutChoice) -> Iterator[str]:
    saved = choice.baseline - choice.cost
    share = f" ({saved / choice.baseline:.0%})" if choice.baseline > 0 else ""
    yield (f"layout choice: cost {human_bytes(choice.cost)}-eq, all-NCHW "
           f"{human_bytes(choice.baseline)}-eq, saves {human_bytes(saved)}-eq{share}")
    for d in choice.decisions:
        figures = ", ".join(f"{layout} {human_bytes(cost)}" for layout, cost in
                            sorted(d.kernel_costs.items(), key=lambda item: item[1]))
        yield f"  {d.op} '{d.node}': {d.layout}  (kernel cost per layout, bytes-eq: {figures})"
        if d.alternative is not None:
            gain = d.kernel_costs[d.layout] - d.kernel_costs[d.alternative]
            yield (f"    kept {d.layout}: {d.alternative} would save {human_bytes(gain)}-eq in "
                   f"the kernel but add {human_bytes(d.conversion_bytes)} of conversions")
    for c in choice.conversions:
        yield f"  convert %{c.value}: {c.src} -> {c.dst}, {human_bytes(c.bytes)}"
