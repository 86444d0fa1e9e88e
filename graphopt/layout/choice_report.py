"""The layout choice as lines of text: per chain of blocked convs the conversions inserted and
the figures that decided it, the NCHW convs and why, then the totals (data in
graphopt.layout.select.LayoutChoice)."""
from __future__ import annotations

import math
from collections import Counter
from typing import Iterator

from graphopt.analysis import human_bytes
from graphopt.layout.kernels import NCHW
from graphopt.layout.select import Conversion, Decision, LayoutChoice


def _amount(choice: LayoutChoice, cost: float) -> str:
    """A cost in bytes-equivalent, and as the time it stands for when the model is a time's."""
    text = f"{human_bytes(cost)}-eq"
    if choice.seconds_per_byte > 0 and math.isfinite(cost):
        text += f" ~{cost * choice.seconds_per_byte * 1e3:.3g} ms"
    return text


def _moved(conversions: tuple[Conversion, ...] | list[Conversion]) -> str:
    return f"{len(conversions)} moving {human_bytes(sum(c.bytes for c in conversions))}"


def _decision_lines(choice: LayoutChoice, d: Decision) -> Iterator[str]:
    figures = ", ".join(f"{layout} {_amount(choice, cost)}" for layout, cost in
                        sorted(d.kernel_costs.items(), key=lambda item: item[1])
                        if math.isfinite(cost))
    yield f"    {d.op} '{d.node}': {d.layout}  (kernel cost per layout: {figures})"
    if d.note:
        yield f"      {d.note}"
    if d.reason:
        yield f"      kept {d.layout}: {d.reason}"
    if d.alternative is not None:
        gain = d.kernel_costs[d.layout] - d.kernel_costs[d.alternative]
        yield (f"      kept {d.layout}: {d.alternative} would save {human_bytes(gain)}-eq in "
               f"the kernel but add {human_bytes(d.conversion_bytes)} of conversions")


def format_choice(choice: LayoutChoice) -> Iterator[str]:
    """Per chain of non-NCHW convs: its convs and their figures, the conversions inserted at
    its boundary (and the values read as they are), what stays converted inside; then the NCHW
    convs with why; then the totals."""
    saved = choice.baseline - choice.cost
    share = f" ({saved / choice.baseline:.0%})" if choice.baseline > 0 else ""
    priced = f" (priced for {choice.priced_for})" if choice.priced_for else ""
    yield (f"layout choice{priced}: cost {_amount(choice, choice.cost)}, all-NCHW "
           f"{_amount(choice, choice.baseline)}, saves {_amount(choice, saved)}{share}")
    by_name = {d.node: d for d in choice.decisions}
    in_chains: set[str] = set()
    for i, chain in enumerate(choice.chains, 1):
        others = f" + {', '.join(chain.others)}" if chain.others else ""
        yield (f"  chain {i}: {chain.layout}, {len(chain.convs)} conv(s){others}; kernels save "
               f"{_amount(choice, chain.kernel_saving)}, conversions inserted "
               f"{_moved(chain.inserted)}: net {_amount(choice, chain.net_saving)}")
        for c in chain.inserted:
            yield f"    convert %{c.value}: {c.src} -> {c.dst}, {human_bytes(c.bytes)}"
        if any(c.cost != c.bytes for c in chain.inserted):
            yield (f"    conversions' cost, their bytes at their speed plus a kernel call "
                   f"each: {_amount(choice, sum(c.cost for c in chain.inserted))}")
        for c in chain.read_as_is:
            yield f"    read %{c.value} as {c.src} (its kernel reads either layout): 0 B"
        if chain.inner_values:
            yield (f"    {chain.inner_values} value(s) pass inside in {chain.layout}, "
                   f"{human_bytes(chain.inner_bytes)}: the conversions per-conv choices would "
                   "insert around each (2 per value) are not needed")
        for name in chain.nodes:
            if name in by_name:
                in_chains.add(name)
                yield from _decision_lines(choice, by_name[name])
    rest = [d for d in choice.decisions if d.node not in in_chains]
    if rest:
        counts = Counter("conv(s)" if d.op == "Conv" else d.op for d in rest)
        yield f"  {NCHW} ({', '.join(f'{n} {op}' for op, n in counts.items())}):"
        for d in rest:
            yield from _decision_lines(choice, d)
    yield (f"layout: {len(choice.conversions)} conversions inserted moving "
           f"{human_bytes(sum(c.bytes for c in choice.conversions))}; "
           f"{len(choice.read_as_is)} values read as they are")


def summarize_choice(choice: LayoutChoice) -> Iterator[str]:
    """A few lines: convs per layout, the conversions inserted, and why each conv or MaxPool
    kept its layout where that is not evident (grouped: a missing blocked kernel, conversions
    that cost more than the other layout's kernel saves, a cheaper NCHW kernel)."""
    if not choice.decisions:
        yield "layout: every tensor NCHW (no convolution to choose a layout for)"
        return
    layouts = Counter(d.layout for d in choice.decisions if d.op == "Conv")
    moved = sum(c.bytes for c in choice.conversions)
    saved = choice.baseline - choice.cost
    yield (f"layout: {', '.join(f'{n} {layout}' for layout, n in layouts.most_common())} "
           f"convs; {len(choice.conversions)} conversions moving {human_bytes(moved)}; cost "
           f"model saves {human_bytes(saved)}-eq of {human_bytes(choice.baseline)}-eq"
           + (f" at {choice.priced_for}" if choice.priced_for else ""))
    reasons: Counter[tuple[str, str, str]] = Counter()  # (op, layout kept, why)
    for d in choice.decisions:
        if d.reason:
            reasons[d.op, d.layout, d.reason] += 1
        elif d.alternative is not None:
            reasons[d.op, d.layout, f"{d.alternative} conversions would cost more than the "
                    "kernel saves"] += 1
        elif d.layout == NCHW:
            reasons[d.op, d.layout, "its NCHW kernel is cheaper" +
                    (f" ({d.note})" if d.note else "")] += 1
    for (op, layout, reason), count in reasons.most_common():
        what = f"conv{'s' if count > 1 else ''}" if op == "Conv" else op
        yield f"  kept {layout} ({count} {what}): {reason}"
