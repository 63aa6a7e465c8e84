"""Job kind -> the function that runs it. A runner takes the job's context and returns its result
(a JSON-able dict); it validates `ctx.spec` with its own spec model first.

The distill and score runners join here when they are written; a worker only claims the kinds it
finds in this dict, so jobs of a kind no worker knows wait in the queue. Tests add kinds of their own.
"""

from collections.abc import Callable
from typing import Any

from services.trainer.context import JobContext

Runner = Callable[[JobContext], dict[str, Any]]

RUNNERS: dict[str, Runner] = {}
