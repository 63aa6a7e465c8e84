"""What a model is budgeted for: the regimes and devices a user's budgets name, each costed by a LUT of
its own, all of them in one search.

Regimes:
- the run's own LUT (a prefill of the configuration's length at batch 1): `--latency`, `--params`, and
  `--memory` without `--context`; its costs keep their names (latency_ms, memory_bytes, params);
- `ttft`: a prefill of `--context` tokens at `--batch`: `--ttft` (time to first token) and `--memory`
  with `--context` (weights, the KV cache of the context and the prefill's peak activations);
- `decode`: one new token after `--context` cached tokens at `--batch`: `--decode-latency`, the latency
  of a decode step (tokens/s is its inverse: `30tok/s` means at most 1000/30 ms a token).
Devices: a budget written `NAME:VALUE` holds on the profiler `--target NAME=URL` names (another machine,
another GPU); a plain one on the run's own profiler (`--device`). One architecture meets them all.
A target's costs are named `<device>.<regime>.<cost>` with the empty parts left out (latency_ms,
decode.latency_ms, gpu.latency_ms, gpu.decode.latency_ms) in the merged cost table
(shared/search_input.py: merged) and in the budgets.
"""

from collections.abc import Iterable
from dataclasses import dataclass

from services.pipeline.budgets import parse_budget
from shared.schemas.lut import Regime
from shared.schemas.search import Budget


@dataclass(frozen=True)
class Target:
    device: str  # "" for the run's own profiler, else a --target name
    kind: str  # "" (the configuration's prefill), "ttft" or "decode"
    regime: Regime
    batch: int
    length: int

    @property
    def name(self) -> str:
        return ".".join(part for part in (self.device, self.kind) if part)

    def cost(self, cost: str) -> str:
        return f"{self.name}.{cost}" if self.name else cost


def targets_and_budgets(
    *,
    length: int,
    latency: Iterable[str] = (),
    memory: Iterable[str] = (),
    params: Iterable[str] = (),
    ttft: Iterable[str] = (),
    decode_latency: Iterable[str] = (),
    context: int | None = None,
    batch: int = 1,
    devices: Iterable[str] = (),
) -> tuple[list[Target], list[Budget]]:
    """The targets the budgets need (the run's own LUT first) and the budgets on their costs.
    ValueError, one line naming the option, for a budget that cannot be read, names no device, or lacks
    the context it needs."""
    devices = set(devices)
    options = [
        ("--latency", "", "latency_ms", latency),
        ("--params", "", "params", params),
        ("--memory", "ttft" if context else "", "memory_bytes", memory),
        ("--ttft", "ttft", "latency_ms", ttft),
        ("--decode-latency", "decode", "latency_ms", decode_latency),
    ]
    targets, budgets = [Target("", "", "prefill", 1, length)], []
    for option, kind, cost, texts in options:
        for text in texts:
            device, _, value = text.rpartition(":") if ":" in text else ("", "", text)
            if device and device not in devices:
                raise ValueError(
                    f"{option}: {device!r} names no --target ({', '.join(sorted(devices)) or 'none'})"
                )
            if kind and not context:
                raise ValueError(f"{option}: give --context (the tokens it is measured at)")
            try:
                budget = parse_budget(cost, value)
            except ValueError as exc:
                raise ValueError(f"{option}: {exc}") from None
            target = Target(device, kind, *_regime(kind, length, context, batch))
            budgets.append(budget.model_copy(update={"cost": target.cost(cost)}))
            targets += [target] if target not in targets else []
    if not budgets:
        options_text = "--latency, --memory, --params, --ttft or --decode-latency"
        raise ValueError(f"give at least one budget ({options_text})")
    if context and not any(t.kind for t in targets):
        raise ValueError("--context: no budget uses it (--ttft, --decode-latency or --memory)")
    if batch != 1 and not any(t.kind for t in targets):
        raise ValueError("--batch: no budget uses it (--ttft, --decode-latency or --memory with --context)")
    unused = devices - {t.device for t in targets}
    if unused:
        raise ValueError(f"--target: no budget names {', '.join(sorted(unused))} (write NAME:VALUE)")
    return targets, budgets


def binding(budgets: list[Budget], costs: dict[str, float], teacher: dict[str, float]) -> str:
    """The latency an architecture comes closest to its budget in (its value over the limit): what the
    report's figures plot against. latency_ms when no budget is on a latency."""
    shares = {
        b.cost: costs[b.cost] / b.limit(teacher[b.cost]) for b in budgets if b.cost.endswith("latency_ms")
    }
    return max(shares, key=shares.__getitem__) if shares else "latency_ms"


def _regime(kind: str, length: int, context: int | None, batch: int) -> tuple[Regime, int, int]:
    match kind:
        case "":
            return "prefill", 1, length
        case "ttft":
            return "prefill", batch, context or 0
        case _:
            return "decode", batch, context or 0
