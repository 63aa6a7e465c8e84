"""What a model is budgeted for: the regimes a user's budgets name, each costed by a LUT of its own,
all of them in one search.

- the run's own LUT (a prefill of the configuration's length at batch 1): `--latency`, `--params`, and
  `--memory` without `--context`; its costs keep their names (latency_ms, memory_bytes, params);
- `ttft`: a prefill of `--context` tokens at `--batch`: `--ttft` (time to first token) and `--memory`
  with `--context` (weights, the KV cache of the context and the prefill's peak activations);
- `decode`: one new token after `--context` cached tokens at `--batch`: `--decode-latency`, the latency
  of a decode step (tokens/s is its inverse: `30tok/s` means at most 1000/30 ms a token).
Their costs are named `<target>.<cost>` (ttft.latency_ms, decode.latency_ms) in the merged cost table
(shared/search_input.py: merged) and in the budgets.
"""

from dataclasses import dataclass

from services.pipeline.budgets import parse_budget
from shared.schemas.lut import Regime
from shared.schemas.search import Budget


@dataclass(frozen=True)
class Target:
    name: str  # "" for the run's own LUT
    regime: Regime
    batch: int
    length: int

    def cost(self, cost: str) -> str:
        return f"{self.name}.{cost}" if self.name else cost


def targets_and_budgets(
    *,
    length: int,
    latency: str | None = None,
    memory: str | None = None,
    params: str | None = None,
    ttft: str | None = None,
    decode_latency: str | None = None,
    context: int | None = None,
    batch: int = 1,
) -> tuple[list[Target], list[Budget]]:
    """The targets the budgets need (the run's own first) and the budgets on their costs. ValueError,
    one line naming the option, for a budget that cannot be read or lacks the context it needs."""
    own = Target("", "prefill", 1, length)
    ttft_target = Target("ttft", "prefill", batch, context or 0)
    decode_target = Target("decode", "decode", batch, context or 0)
    wanted: list[tuple[str, Target, str, str | None]] = [
        ("--latency", own, "latency_ms", latency),
        ("--params", own, "params", params),
        ("--memory", ttft_target if context else own, "memory_bytes", memory),
        ("--ttft", ttft_target, "latency_ms", ttft),
        ("--decode-latency", decode_target, "latency_ms", decode_latency),
    ]
    targets, budgets = [own], []
    for option, target, cost, text in wanted:
        if text is None:
            continue
        if target.name and not context:
            raise ValueError(f"{option}: give --context (the tokens it is measured at)")
        try:
            budget = parse_budget(cost, text)
        except ValueError as exc:
            raise ValueError(f"{option}: {exc}") from None
        budgets.append(budget.model_copy(update={"cost": target.cost(cost)}))
        targets += [target] if target not in targets else []
    if not budgets:
        options = "--latency, --memory, --params, --ttft or --decode-latency"
        raise ValueError(f"give at least one budget ({options})")
    if context and len(targets) == 1:
        raise ValueError("--context: no budget uses it (--ttft, --decode-latency or --memory)")
    if batch != 1 and len(targets) == 1:
        raise ValueError("--batch: no budget uses it (--ttft, --decode-latency or --memory with --context)")
    return targets, budgets
