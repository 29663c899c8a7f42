"""The text a job is found by: the submitted values a history row shows, exports and searches, and the
lowercase text search matches. Its own module because the store's seed, the use cases and the history all
write it, and the store must not import from the use cases above it."""

from __future__ import annotations

from typing import Any

# The submitted values a history row shows, exports and searches.
PARAMS = ("learning_rate", "epochs", "batch_size", "dataset_path", "extra_args", "mixed_precision",
          "gradient_checkpointing", "checkpoint_every", "max_runtime_hours")


def search_text(name: str, owner: str, request: dict[str, Any], tags: list[str], note: str) -> str:
    """What text search matches: name, owner, script, every parameter as key=value, tags and note."""
    params = " ".join(f"{k}={request[k]}" for k in (*PARAMS, "template") if request.get(k) not in (None, ""))
    return " ".join([name, owner, str(request.get("script", "")), params, *tags, note]).lower()
