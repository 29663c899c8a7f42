"""What each webhook kind shows of a job's name, owner and reason: as written, never as Markdown, a link or a
mention. Slack's mrkdwn, Mattermost's Markdown and a Teams card's TextBlock would each turn '[click](http://evil)'
into a link and '<!channel>' or '@all' into a ping of the whole channel."""

from __future__ import annotations

from typing import Any

from services.notifications_messages import render, webhook_body

NAME = "[click](http://evil) <!channel> *urgent*"
REASON = "see <http://evil|here> @all"


def body(kind: str, public_url: str = "https://portal.example.com") -> dict[str, Any]:
    job = {"id": 7, "name": NAME, "owner": "ada", "status": "Failed", "reason": REASON, "runtime_seconds": 5.0,
           "final_metrics": {}, "max_runtime_hours": 8}
    return webhook_body(kind, render({"event": "failed", "job": job, "path": "/job?id=7"}, public_url))


def walk(node: Any) -> list[dict[str, Any]]:
    if isinstance(node, dict):
        return [node, *(d for v in node.values() for d in walk(v))]
    if isinstance(node, list):
        return [d for v in node for d in walk(v)]
    return []


def test_slack_shows_the_name_as_plain_text_and_pings_no_one() -> None:
    message = body("slack")
    formatted = [d["text"] for d in walk(message["blocks"]) if d.get("type") == "mrkdwn"]
    assert not any("evil" in t or "channel" in t for t in formatted)  # nothing of the job's is rendered as mrkdwn
    [shown] = [d["text"] for d in walk(message["blocks"]) if d.get("type") == "plain_text" and NAME in d["text"]]
    assert REASON in shown
    assert "<!channel>" not in message["text"] and "&lt;!channel&gt;" in message["text"]  # the notification's text
    assert "<http://evil|" not in message["text"]
    [button] = [d for d in walk(message["blocks"]) if d.get("type") == "button"]
    assert button["url"] == "https://portal.example.com/job?id=7"


def test_slack_without_a_public_url_sends_no_button_slack_would_refuse() -> None:
    assert not [d for d in walk(body("slack", public_url="")["blocks"]) if d.get("type") == "button"]


def test_a_teams_card_shows_the_name_in_a_text_run_which_renders_no_markdown() -> None:
    card = body("teams")["attachments"][0]["content"]
    markdown = [d["text"] for d in walk(card["body"]) if d.get("type") == "TextBlock"]
    assert not any("evil" in t for t in markdown)
    [run] = [d["text"] for d in walk(card["body"]) if d.get("type") == "TextRun"]
    assert NAME in run and REASON in run
    assert card["actions"][0]["url"] == "https://portal.example.com/job?id=7"


def test_mattermost_escapes_links_and_mentions() -> None:
    text = body("mattermost")["text"]
    assert "[click](http://evil)" not in text and "\\[click\\]\\(http://evil\\)" in text
    assert "<!channel>" not in text and "@all" not in text
    assert text.endswith("[Open in the portal](https://portal.example.com/job?id=7)")
