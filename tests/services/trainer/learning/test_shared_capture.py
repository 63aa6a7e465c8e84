"""The teacher's pass shared out by rows among 2 gloo processes: each rank gets its own slots'
activations on the whole batch, as one process's capture gives them, without running the whole batch."""

import functools

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from services.trainer.learning.distill import capture, capture_shared
from services.trainer.learning.precision import autocast
from shared.model import Decoder
from shared.schemas.shape import PRESETS

TINY = PRESETS["tiny"]
OWNER = {"block0.attn": 1, "block0.mlp": 0, "block1.attn": 0, "block1.mlp": 1}


def one_rank(rank: int, init: str, rows: int, precision: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        torch.manual_seed(0)  # the same teacher and batch on both ranks
        teacher = Decoder(TINY).eval()
        idx = torch.randint(0, TINY.vocab_size, (rows, 16))
        seen: list[int] = []  # the rows this rank's teacher ran
        teacher.embed.register_forward_hook(lambda _m, args, _out: seen.append(len(args[0])))
        cast = functools.partial(autocast, torch.device("cpu"), precision)
        with cast():
            shared = capture_shared(teacher, idx, OWNER)
        assert seen == [-(-rows // 2)]
        with cast():
            alone = capture(teacher, idx)
        assert list(shared) == [slot for slot, r in OWNER.items() if r == rank]
        for slot, (x, t) in shared.items():
            assert x.dtype == alone[slot][0].dtype and t.dtype == alone[slot][1].dtype
            torch.testing.assert_close(x, alone[slot][0])
            torch.testing.assert_close(t, alone[slot][1])
    finally:
        dist.destroy_process_group()


def test_each_rank_gets_its_slots_on_the_whole_batch_from_half_a_teacher_pass(tmp_path):
    for case, (rows, precision) in enumerate(((3, "float32"), (4, "bfloat16"))):  # padded; mixed dtypes
        init = f"file://{tmp_path / f'rendezvous-{case}'}"
        mp.spawn(one_rank, args=(init, rows, precision), nprocs=2, join=True)
