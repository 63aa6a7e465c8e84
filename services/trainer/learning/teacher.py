"""Train a small Llama teacher on offline text and save it as a Hugging Face model directory.

The method needs a trained model to compress; nothing may be downloaded, so the project trains its
own (`unast teacher`). A flat loop in the nanoGPT manner: random windows of the training tokens,
AdamW with warm-up and cosine decay, held-out evaluation every `eval_every` steps, rank 0 logs.
"""

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from services.jobs.checkpoint import load_checkpoint, restore_optimizer, save_checkpoint
from services.trainer.learning.data import Corpus, corpus_dir, prepare_corpus, sample_batch, save_tokenizer
from services.trainer.learning.training import heldout_loss, learning_rate, set_learning_rate
from shared.costs import parameters
from shared.files import atomic_path
from shared.model import Decoder
from shared.schemas.shape import ModelShape
from shared.settings import Settings


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
    vocab_size: int = 2048

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


def train_teacher(
    corpus: Corpus, cfg: TeacherConfig, checkpoints: Path, log=print
) -> tuple[Decoder, list[dict]]:
    """Train from scratch, or resume from `checkpoints`; returns the best model by held-out loss
    (early stopping) and the log, one dict per evaluation."""
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    model = Decoder(cfg.shape(cfg.vocab_size))
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.95),
    )
    history: list[dict] = []
    best: dict[str, torch.Tensor] = {}
    start = 0
    if (checkpoint := load_checkpoint(checkpoints)) is not None:
        if checkpoint.config["teacher"] != asdict(cfg):
            raise ValueError(f"{checkpoints} holds a run with other settings; remove it to start afresh")
        model.load_state_dict(checkpoint.model)
        restore_optimizer(optimizer, checkpoint.optimizer)
        generator.set_state(checkpoint.extra["rng"])
        best = {k[5:]: v for k, v in checkpoint.extra.items() if k.startswith("best.")}
        history, start = checkpoint.config["history"], checkpoint.step
        log(f"resumed at step {start}")
    started = time.perf_counter() - (history[-1]["elapsed_s"] if history else 0.0)
    for step in range(start, cfg.steps + 1):
        if step % cfg.eval_every == 0 or step == cfg.steps:
            loss = heldout_loss(
                model,
                corpus.heldout,
                batch_size=cfg.batch_size,
                seq_len=cfg.seq_len,
                batches=cfg.eval_batches,
                device=torch.device("cpu"),
            ).loss
            entry = {
                "step": step,
                "heldout_loss": round(loss, 5),
                "heldout_ppl": round(math.exp(loss), 3),
                "elapsed_s": round(time.perf_counter() - started, 1),
            }
            if not best or loss < min(h["heldout_loss"] for h in history):
                best = {k: v.detach().clone() for k, v in model.state_dict().items()}
            history.append(entry)
            log(json.dumps(entry))
            save_checkpoint(
                checkpoints,
                step=step,
                config={"teacher": asdict(cfg), "history": history},
                model=model.state_dict(),
                optimizer=optimizer.state_dict(),
                extra={"rng": generator.get_state(), **{f"best.{k}": v for k, v in best.items()}},
            )
        if step == cfg.steps:
            break
        set_learning_rate(
            optimizer, learning_rate(step, steps=cfg.steps, lr=cfg.lr, min_lr=cfg.min_lr, warmup=cfg.warmup)
        )
        x, y = sample_batch(corpus.train, cfg.batch_size, cfg.seq_len, generator)
        loss = model.loss(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    model.load_state_dict(best)
    return model.eval(), history


def save_teacher(model: Decoder, corpus: Corpus, directory: Path, record: dict) -> None:
    """The teacher as a Hugging Face directory: weights, config, tokenizer, and how it was made."""
    model.save_pretrained(directory)
    save_tokenizer(corpus.tokenizer, directory)
    with atomic_path(directory / "training.json") as tmp:
        tmp.write_text(json.dumps(record, indent=1) + "\n")


def make_teacher(out: Path, cfg: TeacherConfig, settings: Settings, command: str, log=print) -> dict:
    """Tokenise the corpus, train (resuming if interrupted), save the teacher; returns its record."""
    torch.set_num_threads(settings.torch_threads)
    corpus = prepare_corpus(corpus_dir(settings, cfg.vocab_size), cfg.vocab_size)
    model, history = train_teacher(corpus, cfg, out.parent / f".{out.name}.checkpoints", log)
    best = min(history, key=lambda h: h["heldout_loss"])
    record = {
        "command": command,
        "torch": torch.__version__,
        "torch_threads": settings.torch_threads,
        "config": asdict(cfg),
        "parameters": parameters(model.architecture, model.shape),
        "corpus": corpus.figures,
        "kept_step": best["step"],
        "heldout_ppl": best["heldout_ppl"],
        "unigram_heldout_ppl": round(corpus.figures["unigram_heldout_perplexity"], 3),
        "history": history,
    }
    save_teacher(model, corpus, out, record)
    log(
        f"teacher saved to {out}: held-out perplexity {best['heldout_ppl']} (step {best['step']}), "
        f"unigram baseline {record['unigram_heldout_ppl']}"
    )
    return record
