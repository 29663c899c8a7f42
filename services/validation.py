"""pydantic's errors as the sentences a person reads at a form field or in an API answer.

pydantic words its messages for programmers ("String should have at least 1 character", "Input should be a
valid integer, unable to parse string as an integer"); every message that can reach a user goes through
`plain_message` instead, keyed by the error's type, so a new constraint gets a sentence here, not pydantic's."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError

# Fields whose empty value deserves more than "must not be empty": what the person should do instead.
EMPTY_FIELD: dict[str, str] = {
    "name": "give the experiment a name (for example 'gpt-finetune-v2')",
    "script": "choose a training script",
}


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _expected(ctx: dict[str, Any]) -> str:
    # pydantic lists the choices as "'a', 'b' or 'c'"; the quotes and the "or" read fine as they are.
    return str(ctx.get("expected", "")).strip() or "one of the allowed values"


def _sentence(kind: str, ctx: dict[str, Any], field: str) -> str | None:
    if kind == "missing":
        return "is required"
    if kind == "string_too_short":
        if ctx.get("min_length") == 1:
            return EMPTY_FIELD.get(field, "must not be empty")
        return f"must be at least {ctx.get('min_length')} characters"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters"
    if kind == "too_long":
        return f"has too many entries: at most {ctx.get('max_length')}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        bound = _number(next(iter(ctx.values()), ""))
        return {"greater_than": f"must be greater than {bound}", "greater_than_equal": f"must be {bound} or more",
                "less_than": f"must be less than {bound}", "less_than_equal": f"must be {bound} or less"}[kind]
    if kind in ("int_parsing", "int_type", "int_from_float", "int_parsing_size"):
        return "must be a whole number, such as 10"
    if kind in ("float_parsing", "float_type", "finite_number"):
        return "must be a number, such as 0.001"
    if kind in ("bool_parsing", "bool_type"):
        return "must be true or false"
    if kind in ("string_type", "string_unicode"):
        return "must be text"
    if kind in ("list_type", "tuple_type", "set_type"):
        return "must be a list"
    if kind in ("literal_error", "enum"):
        return f"must be {_expected(ctx)}"
    if kind.startswith(("date_", "datetime_")):
        return "must be a date such as 2026-01-31"
    if kind == "extra_forbidden":
        return "is not a field the portal knows (check its spelling)"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return "the values must be sent as one JSON object of fields and values"
    if kind in ("json_invalid", "json_type"):
        return "is not valid JSON"
    return None


def plain_message(err: ErrorDetails) -> str:
    """One pydantic error as a sentence (our own validators' ValueErrors are sentences already)."""
    kind = err.get("type", "")
    field = str(err["loc"][0]) if err.get("loc") else ""
    if kind in ("value_error", "assertion_error"):
        return err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    sentence = _sentence(kind, dict(err.get("ctx") or {}), field)
    # An error type not listed above: pydantic's own words, with its "Input should be" in the portal's voice.
    return sentence or err["msg"].replace("Input should be", "must be")


def plain_error(exc: ValidationError) -> ValidationError:
    """The same errors, each with its plain sentence as the message (for callers that read `errors()`)."""
    details: list[InitErrorDetails] = [
        {"type": PydanticCustomError("plain", plain_message(e)), "loc": e["loc"], "input": e.get("input")}
        for e in exc.errors()
    ]
    return ValidationError.from_exception_data(exc.title, details)


def validation_problems(exc: ValidationError) -> dict[str, str]:
    """pydantic errors -> one sentence per form field (field '' = the whole form). A model-level check names
    its field before a colon ("checkpoint_every: must not exceed ...")."""
    out: dict[str, str] = {}
    for err in exc.errors():
        field = str(err["loc"][0]) if err["loc"] else ""
        msg = err["msg"] if err["type"] == "plain" else plain_message(err)
        if not field and ":" in msg:
            head, rest = (s.strip() for s in msg.split(":", 1))
            if head.isidentifier():
                field, msg = head, rest
        out.setdefault(field, msg)
    return out
