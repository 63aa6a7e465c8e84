"""Code an export ships beside its weights, for other tools' loaders (transformers' trust_remote_code).

The files here are copied, never imported from an export: the project itself only reads safetensors and
JSON from model folders (shared/model.py). Each file imports torch and transformers only, so that it
runs where the model is served.
"""

from pathlib import Path

from shared.schemas.shape import UNAST_TYPE

MODEL_TYPE = UNAST_TYPE  # what config.json calls a compressed model

FILES = ("configuration_unast.py", "modeling_unast.py")
AUTO_MAP = {
    "AutoConfig": "configuration_unast.UnastConfig",
    "AutoModelForCausalLM": "modeling_unast.UnastForCausalLM",
}


def sources() -> dict[str, bytes]:
    """The shipped files, by name."""
    here = Path(__file__).parent
    return {name: (here / name).read_bytes() for name in FILES}
