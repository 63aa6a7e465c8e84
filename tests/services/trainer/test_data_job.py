"""A dataset `unast compress --data` prepared reaches a real distill job: the job reads the tokens the
preparation counted, and every job of the kind accepts the folder (inside the artifacts root)."""

import json

from services.pipeline import data
from tests.services.trainer.test_distill_job import distill_spec, distilled, run_next


def test_a_prepared_dataset_reaches_a_distill_job_with_its_token_counts(
    sqlite_settings, sqlite_trainer, sqlite_teacher_dir
):
    # the teacher's own training text (a play), as rows of a .jsonl: a speech each
    speeches = (sqlite_teacher_dir.parent / "dataset" / "train.txt").read_text().split("\n\n")
    rows = sqlite_settings.input_roots[0] / "speeches.jsonl"
    rows.write_text("".join(json.dumps({"text": s}) + "\n" for s in speeches if s.strip()))
    spec = distill_spec(sqlite_teacher_dir, steps=4, checkpoint_every=10, warmup=1, eval_batches=1)
    prepared = data.prepare(
        rows, "text", sqlite_teacher_dir, sqlite_settings, spec.batch_size * (spec.seq_len + 1)
    )
    job = sqlite_trainer.submit(spec.model_copy(update={"dataset": str(prepared.directory)}))
    assert run_next(sqlite_settings)
    assert sqlite_trainer.job(job.id).state == "succeeded", sqlite_trainer.log(job.id).lines
    result = distilled(sqlite_trainer, job.id)
    assert (result.train_tokens, result.heldout_tokens) == (
        prepared.tokens["train"],
        prepared.tokens["heldout"],
    )
    held, total = prepared.documents["heldout"], sum(prepared.documents.values())
    assert held == round(total * data.HELDOUT_SHARE)  # a tenth of the speeches held out
