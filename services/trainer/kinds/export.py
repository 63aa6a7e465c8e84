"""The export job: a student written as a directory a user takes away, checked as it is written.

<job dir>/export/ holds:
- config.json: a model of the teacher's sizes in every block as its family's plain config; any other
  in the unast form (shared/model.py: unast_config) with the modeling code transformers runs for it
  (configuration_unast.py, modeling_unast.py from shared/hf_code: trust_remote_code, offline), per
  block what its attention and MLP became (`unast_blocks`) and the architecture our loader reads;
- model.safetensors (Hugging Face Llama names; linear operators under the DeciLM names), the
  tokenizer files, provenance.json (teacher, the jobs that made it, the device and LUT it was searched
  for, its predicted costs);
- model.onnx: the same model by torch's ONNX exporter, with KV-cache inputs and outputs
  (past_key.i / present_key.i per attention block), so onnxruntime generates;
- nemotron-nas/: the DeciLM / Nemotron-NAS `block_configs` form (shared/decilm.py), when every block
  fits that convention.
The job reloads the directory with our loader (logits must be bit-identical) and runs the ONNX model
in onnxruntime (logits within 1e-4, and greedy tokens with its KV cache equal to ours); the result
gives both. GET /v1/jobs/{id}/files/export/<file> fetches a file.
"""

import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from sqlalchemy.orm import Session

from services.jobs.context import JobContext
from services.jobs.kind import JobKind
from services.trainer.kinds.model_ref import check_model, copy_tokenizer, load_model
from services.trainer.learning.distributed import job_device
from services.trainer.learning.onnx_export import export_onnx, onnx_generate, onnx_logits
from shared import decilm, hf_code
from shared.costs import parameters
from shared.files import atomic_path
from shared.model import Decoder, write_config
from shared.rope import is_dynamic
from shared.schemas.trainer import ExportResult, ExportSpec
from shared.settings import Settings

SOURCES = {"student", "rank", "finetune"}
EXPORT_DIR = "export"
DECILM_DIR = "nemotron-nas"
ONNX_FILE = "model.onnx"
ONNX_TOLERANCE = 1e-4  # largest |logit difference| between onnxruntime and torch accepted
ONNX_GENERATE = (8, 16)  # prompt tokens (the probe's first), greedy tokens onnxruntime must pick as we do


def check(spec: ExportSpec, settings: Settings, session: Session) -> ExportSpec:
    return spec.model_copy(
        update={"model": check_model("body.model", spec.model, settings, session, SOURCES)}
    )


def run(ctx: JobContext) -> ExportResult:
    spec = ExportSpec.model_validate(ctx.spec)
    device = job_device(ctx.settings)
    ctx.status("loading the model", 0.0)
    loaded = load_model(ctx, spec.model, device)
    model = loaded.model.eval()
    blocks, reasons = decilm.block_configs(model.architecture, model.shape)
    if blocks is None and spec.format == "nemotron-nas":  # asked for, and not expressible: write nothing
        raise RuntimeError(f"the architecture does not fit the nemotron-nas form: {'; '.join(reasons)}")
    directory = ctx.directory / EXPORT_DIR
    ctx.status("writing the model directory", 0.1)
    model.save_pretrained(directory)
    copy_tokenizer(loaded.directory, directory)
    write_json(directory / "provenance.json", provenance(spec, loaded, ctx))

    ctx.status("reloading it", 0.2)
    probe = torch.randint(0, model.shape.vocab_size, (2, min(32, model.shape.max_position_embeddings)))
    with torch.no_grad():
        reference = model(probe.to(device)).cpu()
        reloaded = Decoder.from_pretrained(directory)(probe)
    identical = torch.equal(reference, reloaded)

    if blocks is not None:
        write_decilm(model, directory)

    onnx_diff = onnx_generate_equal = None
    if spec.onnx and is_dynamic(model.shape):
        ctx.log("no model.onnx: dynamic RoPE rescales with each sequence's length; an ONNX graph cannot")
    elif spec.onnx:
        ctx.status("exporting to ONNX", 0.3)
        export_onnx(model.cpu(), directory / ONNX_FILE, model.shape.max_position_embeddings)
        ctx.status("running it in onnxruntime", 0.9)
        onnx_diff = float(
            (torch.from_numpy(onnx_logits(directory / ONNX_FILE, probe)) - reference).abs().max()
        )
        if onnx_diff > ONNX_TOLERANCE:
            raise RuntimeError(
                f"onnxruntime's logits differ from torch's by {onnx_diff:.2e} (> {ONNX_TOLERANCE})"
            )
        prompt = probe[:, : ONNX_GENERATE[0]]
        new = min(ONNX_GENERATE[1], model.shape.max_position_embeddings - prompt.shape[1])
        ours = model.generate(prompt, new, temperature=0)  # on the CPU: export_onnx moved the model
        onnx_generate_equal = torch.equal(onnx_generate(directory / ONNX_FILE, prompt, new), ours)
        if not onnx_generate_equal:
            raise RuntimeError("onnxruntime's greedy tokens (with its KV cache) differ from torch's")
    if not identical:
        raise RuntimeError("the exported directory does not reload to bit-identical logits")
    files = sorted(str(p.relative_to(ctx.directory)) for p in directory.rglob("*") if p.is_file())
    ctx.log(f"exported {len(files)} files to {directory}" + ("" if blocks else f"; no {DECILM_DIR}/ form"))
    return ExportResult(
        directory=str(directory),
        files=files,
        architecture=model.architecture,
        params=parameters(model.architecture, model.shape),
        reload_identical=identical,
        onnx_max_abs_diff=onnx_diff,
        onnx_generate_equal=onnx_generate_equal,
        decilm=blocks is not None,
        decilm_reasons=reasons,
    )


def provenance(spec: ExportSpec, loaded, ctx: JobContext) -> dict[str, Any]:
    return {
        "teacher": str(loaded.teacher),
        "jobs": {**loaded.lineage, "export_job": ctx.job_id},
        "architecture": loaded.architecture.model_dump(mode="json"),
        "searched_for": spec.target.model_dump(mode="json"),
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def write_decilm(model: Decoder, directory: Path) -> None:
    """nemotron-nas/: the DeciLM config beside the same weights (a hard link where the file system
    allows, else a copy) and the tokenizer."""
    target = directory / DECILM_DIR
    target.mkdir(exist_ok=True)
    dtype = str(model.embed.weight.dtype).removeprefix("torch.")
    write_config(target, decilm.config(model.architecture, model.shape, dtype))
    for name, source in hf_code.sources().items():  # transformers loads the folder with these, offline
        with atomic_path(target / name) as tmp:
            tmp.write_bytes(source)
    with atomic_path(target / "model.safetensors") as tmp:
        try:
            os.link(directory / "model.safetensors", tmp)
        except OSError:
            shutil.copyfile(directory / "model.safetensors", tmp)
    copy_tokenizer(directory, target)


def write_json(path: Path, value: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(value, indent=1) + "\n")


KIND = JobKind(name="export", spec=ExportSpec, result=ExportResult, run=run, check=check)
