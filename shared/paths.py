"""Client-given paths stay inside the configured roots, whichever service is given them."""

from collections.abc import Iterable
from pathlib import Path

from shared.settings import Settings


def confine(path: str | Path, roots: Iterable[Path]) -> Path:
    """The path with symlinks resolved, if it lies inside one of the roots; ValueError otherwise.

    `..` is refused outright, even where it would resolve inside a root: a client has no reason to
    write it, and refusing it leaves nothing to reason about.
    """
    given = Path(path)
    if ".." in given.parts:
        raise ValueError("'..' is not allowed in paths")
    try:
        resolved = given.resolve()
    except (OSError, ValueError) as exc:  # a NUL byte, a symlink loop
        raise ValueError(f"cannot resolve the path: {exc}") from exc
    roots = list(roots)
    for root in roots:
        if resolved.is_relative_to(root.resolve()):
            return resolved
    raise ValueError(f"{path} is outside the allowed folders ({', '.join(str(r) for r in roots)})")


def input_roots(settings: Settings) -> list[Path]:
    """Where a client-given input may lie: the input roots, and earlier jobs' artifacts."""
    return [*settings.input_roots, settings.artifacts_root]
