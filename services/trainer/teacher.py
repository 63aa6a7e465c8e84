"""Train a small Llama teacher on offline text and save it as a Hugging Face model directory.

The method needs a trained model to compress; nothing may be downloaded, so the project trains its
own (`unast teacher`). A flat loop in the nanoGPT manner: random windows of the training tokens,
AdamW with warm-up and cosine decay, held-out evaluation every `eval_every` steps, rank 0 logs.
"""

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from services.trainer.distill import learning_rate
from shared.model import Decoder
from shared.schemas.shape import ModelShape


@dataclass
class TeacherConfig:
    hidden_size: int = 192
    num_layers: int = 6
    num_heads: int = 6
    num_kv_heads: int = 6
    intermediate_size: int = 512
    seq_len: int = 256
    batch_size: int = 16
    steps: int = 6000
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup: int = 200
    weight_decay: float = 0.1
    eval_every: int = 250
    eval_batches: int = 40
    seed: int = 1337
    extra: dict = field(default_factory=dict)

    def shape(self, vocab_size: int) -> ModelShape:
        return ModelShape(
            name="unast-teacher",
            vocab_size=vocab_size,
            hidden_size=self.hidden_size,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            num_kv_heads=self.num_kv_heads,
            head_dim=self.hidden_size // self.num_heads,
            intermediate_size=self.intermediate_size,
            max_position_embeddings=2 * self.seq_len,
        )


def windows(tokens: torch.Tensor, batch_size: int, seq_len: int, generator: torch.Generator):
    """A batch of random (input, target) windows of a 1-D token tensor."""
    starts = torch.randint(0, len(tokens) - seq_len - 1, (batch_size,), generator=generator)
    chunks = torch.stack([tokens[s : s + seq_len + 1] for s in starts.tolist()])
    return chunks[:, :-1], chunks[:, 1:]


def heldout_windows(tokens: torch.Tensor, batch_size: int, seq_len: int, max_batches: int):
    """Consecutive, non-overlapping held-out windows: the same every time."""
    per_batch = batch_size * (seq_len + 1)
    for b in range(min(max_batches, len(tokens) // per_batch)):
        chunk = tokens[b * per_batch : (b + 1) * per_batch].view(batch_size, seq_len + 1)
        yield chunk[:, :-1], chunk[:, 1:]


@torch.no_grad()
def heldout_loss(model: Decoder, tokens: torch.Tensor, cfg: TeacherConfig) -> float:
    model.eval()
    losses = [
        model.loss(x, y).item()
        for x, y in heldout_windows(tokens, cfg.batch_size, cfg.seq_len, cfg.eval_batches)
    ]
    model.train()
    return sum(losses) / len(losses)


def train_teacher(
    train_tokens: torch.Tensor, heldout_tokens: torch.Tensor, vocab_size: int, cfg: TeacherConfig, log=print
) -> tuple[Decoder, list[dict]]:
    """Train from scratch; returns the model and its log (one dict per evaluation)."""
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    model = Decoder(cfg.shape(vocab_size))
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.95),
    )
    history: list[dict] = []
    started = time.perf_counter()
    for step in range(cfg.steps + 1):
        if step % cfg.eval_every == 0 or step == cfg.steps:
            loss = heldout_loss(model, heldout_tokens, cfg)
            entry = {
                "step": step,
                "heldout_loss": loss,
                "heldout_ppl": math.exp(loss),
                "elapsed_s": time.perf_counter() - started,
            }
            history.append(entry)
            log(json.dumps(entry))
        if step == cfg.steps:
            break
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(
                step, steps=cfg.steps, lr=cfg.lr, min_lr=cfg.min_lr, warmup=cfg.warmup
            )
        x, y = windows(train_tokens, cfg.batch_size, cfg.seq_len, generator)
        loss = model.loss(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    return model.eval(), history


def save_teacher(
    model: Decoder, directory: Path, cfg: TeacherConfig, history: list[dict], extra: dict
) -> None:
    model.save_pretrained(directory)
    record = {"config": asdict(cfg), "history": history, **extra}
    (directory / "training.json").write_text(json.dumps(record, indent=2) + "\n")
