"""The teacher's pass as a pipeline over 2 gloo processes: each rank holds only its run of the teacher
and gets its slots' activations on the whole batch, as one process's capture gives them."""

import functools

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from services.trainer.learning.distill import capture, capture_run, keep_run
from services.trainer.learning.precision import autocast
from shared.model import Decoder
from shared.schemas.shape import PRESETS

TINY = PRESETS["tiny"]  # 2 blocks: slots 0-3
RUNS = [range(0, 3), range(3, 4)]  # a run may end inside a block


def held(model: Decoder) -> int:
    return sum(p.numel() for p in model.parameters() if p.device.type != "meta")


def one_rank(rank: int, init: str, rows: int, precision: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        torch.manual_seed(0)  # the same teacher and batch on both ranks
        whole = Decoder(TINY).eval()
        idx = torch.randint(0, TINY.vocab_size, (rows, 16))
        cast = functools.partial(autocast, torch.device("cpu"), precision)
        with cast():
            alone = capture(whole, idx)
        teacher = Decoder(TINY).eval()
        teacher.load_state_dict(whole.state_dict())
        keep_run(teacher, RUNS[rank])
        assert held(teacher) < held(whole)
        ours = [slot for slot, _ in teacher.slots()[RUNS[rank].start : RUNS[rank].stop]]
        if rank == 0:  # the embedding starts the pass; its head and the other run are freed
            assert held(teacher) == held(whole) - sum(
                p.numel() for _, op in whole.slots()[3:] for p in op.parameters()
            ) - TINY.hidden_size - (0 if TINY.tie_word_embeddings else whole.lm_head.weight.numel())
        with cast():
            shared = capture_run(teacher, idx, RUNS[rank])
        assert list(shared) == ours
        for slot, (x, t) in shared.items():
            assert x.dtype == alone[slot][0].dtype and t.dtype == alone[slot][1].dtype
            torch.testing.assert_close(x, alone[slot][0])
            torch.testing.assert_close(t, alone[slot][1])
    finally:
        dist.destroy_process_group()


def test_each_rank_gets_its_slots_on_the_whole_batch_holding_only_its_run(tmp_path):
    for case, (rows, precision) in enumerate(((3, "float32"), (4, "bfloat16"), (1, "float32"))):
        init = f"file://{tmp_path / f'rendezvous-{case}'}"
        mp.spawn(one_rank, args=(init, rows, precision), nprocs=2, join=True)
