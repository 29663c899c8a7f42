"""What a notification says: one sentence of what happened, then the job's name, owner, runtime, final metrics and
a link to its page; as e-mail (plain text and HTML) and as each webhook kind's JSON.

Texts are Jinja2 templates rendered in the sandbox: every value in them (a job's name, a failure reason read
from its log) is a user's or a job's, never code."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import cache
from typing import Any

from jinja2 import StrictUndefined, Template
from jinja2.sandbox import SandboxedEnvironment

_TEXT = SandboxedEnvironment(autoescape=False, undefined=StrictUndefined, keep_trailing_newline=True)
_HTML = SandboxedEnvironment(autoescape=True, undefined=StrictUndefined)

SENTENCES = {
    "succeeded": "Job {{ job.name }} of {{ job.owner }} succeeded after {{ runtime }}.",
    "failed": "Job {{ job.name }} of {{ job.owner }} failed{% if job.runtime_seconds is not none %} after "
              "{{ runtime }}{% endif %}: {{ job.reason or 'no reason was given' }}.",
    "stopped": "Job {{ job.name }} of {{ job.owner }} was stopped{% if job.runtime_seconds is not none %} after "
               "{{ runtime }}{% endif %}.",
    "max_runtime": "Job {{ job.name }} of {{ job.owner }} was stopped at its max runtime after {{ runtime }}.",
    "log_match": "Job {{ job.name }} of {{ job.owner }} printed a line matching {{ pattern }}{% if job.runtime_seconds "
                 "is not none %} after {{ runtime }}{% endif %}: {{ line }}",
    "metric_threshold": "Job {{ job.name }} of {{ job.owner }} reported {{ metric }} = {{ value_text }} at step "
                        "{{ step }}{% if job.runtime_seconds is not none %} after {{ runtime }}{% endif %}, crossing "
                        "your rule {{ rule }}.",
    "started": "Job {{ job.name }} of {{ job.owner }} started after waiting {{ duration(waited_seconds) }} in the "
               "queue.",
    "stuck": "Job {{ job.name }} of {{ job.owner }} has printed nothing for {{ duration(quiet_seconds) }} while "
             "running; it may be stuck.",
    "gpu_idle": "Job {{ job.name }} of {{ job.owner }} has kept its GPUs below {{ idle_percent }} % for "
                "{{ duration(idle_seconds) }}: they are idle.",
    "test": "A test message from the ML Job Portal: notifications of {{ owner }} arrive on this channel.",
    "confirm": "Someone signed in to the ML Job Portal as {{ owner }} asked to get notifications at {{ address }}. "
               "If that was you, open the link below (or paste this code on the Notifications page) within {{ hours }} "
               "hours: {{ code }} . If not, ignore this message: nothing else will be sent here.",
    "channel_disabled": "Your {{ channel }} channel was disabled after {{ attempts }} failed attempts to deliver: "
                        "{{ error }}. Fix it, then enable it again on the Notifications page.",
}
SUBJECTS = {"succeeded": "succeeded", "failed": "failed", "stopped": "was stopped", "max_runtime": "hit max runtime",
            "log_match": "printed a line matching your pattern", "metric_threshold": "crossed a metric rule",
            "started": "started", "stuck": "may be stuck", "gpu_idle": "has idle GPUs"}
FIXED_SUBJECTS = {"confirm": "[ML Job Portal] Confirm your address for notifications"}

TEXT_BODY = _TEXT.from_string("""{{ sentence }}

{% if job %}Job:           {{ job.name }} (#{{ job.id }})
Owner:         {{ job.owner }}
Status:        {{ job.status }}{% if job.reason %} ({{ job.reason }}){% endif %}
Runtime:       {{ runtime }}
Final metrics: {{ metrics or 'none' }}
{% endif %}Link:          {{ url }}
""")
HTML_BODY = _HTML.from_string("""<!doctype html><html><body style="font-family: sans-serif">
<p>{{ sentence }}</p>
{% if job %}<table>
<tr><th align="left">Job</th><td>{{ job.name }} (#{{ job.id }})</td></tr>
<tr><th align="left">Owner</th><td>{{ job.owner }}</td></tr>
<tr><th align="left">Status</th><td>{{ job.status }}{% if job.reason %} ({{ job.reason }}){% endif %}</td></tr>
<tr><th align="left">Runtime</th><td>{{ runtime }}</td></tr>
<tr><th align="left">Final metrics</th><td>{{ metrics or 'none' }}</td></tr>
</table>{% endif %}
<p><a href="{{ url }}">{{ link_text }}</a></p>
</body></html>
""")


@cache
def _sentence(event: str) -> Template:
    return _TEXT.from_string(SENTENCES[event])


def runtime_text(seconds: float | None) -> str:
    """731 -> '12 min', 7500 -> '2 h 5 min' (a message reads it once; seconds only under a minute)."""
    if seconds is None:
        return "no time (it never started)"
    if seconds < 59.5:
        return f"{round(seconds)} s"
    hours, minutes = divmod(round(seconds) // 60, 60)
    return " ".join(part for part in (f"{hours} h" * bool(hours), f"{minutes} min" * bool(minutes or not hours))
                    if part)


def number(v: Any) -> str:
    if isinstance(v, float) and not math.isfinite(v):
        return "NaN" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return f"{v:.4g}" if isinstance(v, int | float) else str(v)


def metrics_text(metrics: dict[str, Any]) -> str:
    return ", ".join(f"{k} {number(v)}" for k, v in sorted(metrics.items()))


@dataclass(frozen=True)
class Message:
    event: str
    sentence: str
    subject: str
    url: str
    text: str
    html: str
    facts: dict[str, Any]  # the generic webhook's JSON


def render(payload: dict[str, Any], public_url: str) -> Message:
    """The message of a notification's payload (services/notifications_outbox.py)."""
    event = payload["event"]
    job = payload.get("job")
    path = payload.get("path", "/notifications")
    url = public_url.rstrip("/") + path if public_url else path
    values = dict(payload, runtime=runtime_text(job.get("runtime_seconds")) if job else "",
                  metrics=metrics_text(job.get("final_metrics") or {}) if job else "",
                  value_text=number(payload.get("value")), duration=runtime_text)
    sentence = _sentence(event).render(values)
    subject = f"[ML Job Portal] {job['name']} {SUBJECTS[event]}" if job and event in SUBJECTS else \
        FIXED_SUBJECTS.get(event, f"[ML Job Portal] {sentence}")
    common = dict(values, sentence=sentence, url=url, job=job,
                  link_text=f"Open {job['name']} in the portal" if job else "Open the portal")
    facts: dict[str, Any] = {"event": event, "sentence": sentence, "url": url}
    facts |= {k: payload[k] for k in ("line", "pattern", "rule", "metric", "step") if k in payload}
    if "value" in payload:
        facts["value"] = _finite({"v": payload["value"]})["v"]
    if job:
        facts["job"] = dict(job, runtime=values["runtime"], final_metrics=_finite(job.get("final_metrics") or {}))
    return Message(event, sentence, subject, url, TEXT_BODY.render(common), HTML_BODY.render(common), facts)


def _finite(metrics: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN: a diverged metric is null (the sentence and text say NaN)."""
    return {k: v if not (isinstance(v, float) and not math.isfinite(v)) else None for k, v in metrics.items()}


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_MARKDOWN = re.compile(r"([\\`*_~\[\]()!<>|#])")


def _mattermost_escape(text: str) -> str:
    """Mattermost renders Markdown and mentions: a job's name, reason or log line ('@all', '![](https://…)') is
    said as written, not a ping of a whole team channel or an image fetched from anywhere."""
    return _MARKDOWN.sub(r"\\\1", text).replace("@", "@\u200b")


def webhook_body(kind: str, msg: Message) -> dict[str, Any]:
    """The JSON each service's incoming webhook takes; 'generic' is the portal's own, with every field."""
    if kind == "slack":
        # Slack's mrkdwn has no escape for *bold*, _italics_ or a bare link: the message shows the sentence as
        # plain_text (never formatted), and the link is a button. The top-level text only feeds notifications and
        # old clients; escaped there, a '<!channel>' in a job's name pings no one.
        blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "plain_text", "text": msg.sentence,
                                                                     "emoji": False}}]
        if msg.url.startswith(("https://", "http://")):  # Slack refuses a whole message whose button is not a URL
            blocks.append({"type": "actions", "elements": [
                {"type": "button", "text": {"type": "plain_text", "text": "Open in the portal"}, "url": msg.url}]})
        return {"text": f"{_slack_escape(msg.sentence)} <{msg.url}|Open in the portal>", "blocks": blocks}
    if kind == "mattermost":
        return {"username": "ML Job Portal",
                "text": f"{_mattermost_escape(msg.sentence)} [Open in the portal]({msg.url})"}
    if kind == "teams":  # an Adaptive Card, which Teams' Workflows webhooks (and the older connectors) take
        card = {"type": "AdaptiveCard", "version": "1.4", "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                # A TextBlock renders Markdown ('[click](http://evil)' would be a link); a TextRun never does.
                "body": [{"type": "RichTextBlock", "inlines": [{"type": "TextRun", "text": msg.sentence}]}],
                "actions": [{"type": "Action.OpenUrl", "title": "Open in the portal", "url": msg.url}]}
        return {"type": "message", "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}]}
    return msg.facts
