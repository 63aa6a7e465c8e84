"""Checkpoints: safetensors + JSON, written atomically, loaded back exactly, no pickle anywhere."""

import json
import os

import pytest
import torch
from torch import nn

from services.jobs import checkpoint as ckpt
from services.jobs.checkpoint import load_checkpoint, restore_optimizer, save_checkpoint


def trained(seed: int = 0, steps: int = 3) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01, betas=(0.8, 0.95))
    for _ in range(steps):
        model(torch.randn(5, 4)).pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    return model, optimizer


def test_round_trip_is_exact(tmp_path):
    model, optimizer = trained()
    rng = torch.Generator().manual_seed(7)
    torch.randn(3, generator=rng)
    save_checkpoint(
        tmp_path,
        step=3,
        config={"lr": 0.01, "layers": [4, 6, 2]},
        model=model.state_dict(),
        optimizer=optimizer.state_dict(),
        extra={"rng": rng.get_state()},
    )
    loaded = load_checkpoint(tmp_path)
    assert loaded.step == 3
    assert loaded.config == {"lr": 0.01, "layers": [4, 6, 2]}
    fresh, fresh_opt = trained(seed=1, steps=1)
    fresh.load_state_dict(loaded.model)
    restore_optimizer(fresh_opt, loaded.optimizer)
    for a, b in zip(model.state_dict().values(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    want, got = optimizer.state_dict(), fresh_opt.state_dict()
    assert want["param_groups"] == got["param_groups"]  # betas are a tuple again
    for param, entries in want["state"].items():
        for key, value in entries.items():
            assert torch.equal(value, got["state"][param][key]), (param, key)
    resumed = torch.Generator()
    resumed.set_state(loaded.extra["rng"])
    assert torch.equal(torch.randn(3, generator=resumed), torch.randn(3, generator=rng))
    # training on from the loaded state matches training on from the original
    x = torch.randn(5, 4)
    for m, o in ((model, optimizer), (fresh, fresh_opt)):
        m(x).pow(2).mean().backward()
        o.step()
    for a, b in zip(model.parameters(), fresh.parameters(), strict=True):
        assert torch.equal(a, b)


def test_files_are_safetensors_and_json_only(tmp_path):
    model, optimizer = trained()
    for step in (1, 2):
        save_checkpoint(
            tmp_path, step=step, config={}, model=model.state_dict(), optimizer=optimizer.state_dict()
        )
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["checkpoint-000000002.safetensors", "checkpoint.json"]  # the older one is gone
    record = json.loads((tmp_path / "checkpoint.json").read_text())
    assert record["tensors"] == "checkpoint-000000002.safetensors"
    with open(tmp_path / record["tensors"], "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(header_len))
    assert "model/0.weight" in header and "optimizer/0/exp_avg" in header


def test_tied_weights_are_saved(tmp_path):
    emb = nn.Embedding(10, 4)
    head = nn.Linear(4, 10, bias=False)
    head.weight = emb.weight
    state = {"emb.weight": emb.weight, "head.weight": head.weight}
    optimizer = torch.optim.SGD([emb.weight], lr=0.1, momentum=0.9)
    save_checkpoint(tmp_path, step=0, config={}, model=state, optimizer=optimizer.state_dict())
    loaded = load_checkpoint(tmp_path)
    assert torch.equal(loaded.model["emb.weight"], loaded.model["head.weight"])


def test_no_checkpoint_is_none(tmp_path):
    assert load_checkpoint(tmp_path / "missing") is None


def test_a_crash_while_saving_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    model, optimizer = trained()
    save_checkpoint(tmp_path, step=5, config={}, model=model.state_dict(), optimizer=optimizer.state_dict())

    def crash(*_args, **_kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "save_file", crash)
    with pytest.raises(OSError):
        save_checkpoint(
            tmp_path, step=6, config={}, model=model.state_dict(), optimizer=optimizer.state_dict()
        )
    assert load_checkpoint(tmp_path).step == 5
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left
    # and a crash between the tensors and the pointer: the old pointer still names the old tensors
    real_replace = os.replace
    monkeypatch.undo()

    def replace_tensors_only(src, dst):
        if str(dst).endswith("checkpoint.json"):
            raise OSError("killed")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_tensors_only)
    with pytest.raises(OSError):
        save_checkpoint(
            tmp_path, step=7, config={}, model=model.state_dict(), optimizer=optimizer.state_dict()
        )
    monkeypatch.undo()
    assert load_checkpoint(tmp_path).step == 5
