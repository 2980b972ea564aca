"""Notifications: what fleet tells people about a revision, and the exact payload each receiver gets.

Owns: the verdict of a revision over the rollouts it started (`verdict`: pending while one goes on,
failure when one halted or rolled back, success when every one completed, error when one was aborted or
superseded before completing), `Tracker` (the verdicts already told, so a revision is told each change of
its verdict once, and changes noted together at once), `Notice` (one such change), the receivers (`Receiver`: a JSON or Slack-compatible
webhook, GitHub or GitLab commit status) and their payloads (`payload`), and reading a repository URL
into the GitHub ``OWNER/NAME`` or GitLab project path (`repo_path`). docs/notifications.md says what
each payload carries.

Does not: send, retry or store anything (`fleet.controller.notify` delivers from the outbox kept by `fleet.clients.statedb`),
or read tokens (a payload never holds one: credentials are headers added when sending). A payload
carries revisions, bundle and cluster names, states, the commit's author and subject, and the reason of
a halt; never an object, a Secret value or a token.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fleet.core import rollout as ro

PENDING = "pending"
SUCCESS = "success"
FAILURE = "failure"
ERROR = "error"
STATES = (PENDING, SUCCESS, FAILURE, ERROR)

WEBHOOK, GITHUB, GITLAB = "webhook", "github", "gitlab"
JSON_FORMAT, SLACK_FORMAT = "json", "slack"
GITHUB_API = "https://api.github.com"
GITLAB_API = "https://gitlab.com/api/v4"
DESCRIPTION_LIMIT = 140  # GitHub refuses longer commit status descriptions
_GITLAB_STATE = {PENDING: "running", SUCCESS: "success", FAILURE: "failed", ERROR: "canceled"}
_EMOJI = {
    PENDING: ":hourglass_flowing_sand:",
    SUCCESS: ":white_check_mark:",
    FAILURE: ":x:",
    ERROR: ":warning:",
}
MAX_REVISIONS = 500  # revisions the tracker remembers (the oldest ended ones are forgotten first)


def _cut(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class Verdict:
    state: str
    description: str
    event: str  # started | completed | halted | rolledBack | aborted | superseded


def verdict(phases: Mapping[str, tuple[str, str]]) -> Verdict:
    """The verdict of one revision from its rollouts: bundle -> (rollout phase, reason)."""
    names = sorted(phases)

    def first(*wanted: ro.Phase) -> tuple[str, str] | None:
        for b in names:
            if phases[b][0] in wanted:
                return b, phases[b][1]
        return None

    halted = first(ro.Phase.HALTED)
    if halted is not None:
        return Verdict(FAILURE, _cut(f"{halted[0]} halted: {halted[1]}", DESCRIPTION_LIMIT), "halted")
    rolled = first(ro.Phase.ROLLED_BACK)
    if rolled is not None:
        return Verdict(FAILURE, _cut(f"{rolled[0]} {rolled[1]}", DESCRIPTION_LIMIT), "rolledBack")
    ended = {
        str(p) for p in (ro.Phase.COMPLETED, ro.Phase.SUPERSEDED, ro.Phase.ABORTED, ro.Phase.ROLLED_BACK)
    }
    if all(phases[b][0] in ended for b in names):
        aborted = first(ro.Phase.ABORTED)
        if aborted is not None:
            return Verdict(ERROR, _cut(f"{aborted[0]} {aborted[1]}", DESCRIPTION_LIMIT), "aborted")
        superseded = first(ro.Phase.SUPERSEDED)
        if superseded is not None:
            return Verdict(ERROR, _cut(f"{superseded[0]} {superseded[1]}", DESCRIPTION_LIMIT), "superseded")
        return Verdict(SUCCESS, _cut("rolled out: " + ", ".join(names), DESCRIPTION_LIMIT), "completed")
    return Verdict(PENDING, _cut("rolling out: " + ", ".join(names), DESCRIPTION_LIMIT), "started")


@dataclass(frozen=True)
class Notice:
    """A revision's verdict changed: what every receiver is told."""

    revision: str
    state: str
    event: str
    description: str
    at: float
    bundles: Mapping[str, str]  # bundle -> rollout phase
    reasons: Mapping[str, str] = field(
        default_factory=dict
    )  # bundle -> why it halted or ended (not completed)
    author: str | None = None
    subject: str | None = None  # the first line of the commit message


class Tracker:
    """The rollouts of each revision and the verdict last told about it. Not thread-safe."""

    def __init__(self) -> None:
        self._phases: dict[str, dict[str, tuple[str, str]]] = {}
        self._told: dict[str, Verdict] = {}
        self._who: dict[str, tuple[str | None, str | None]] = {}  # revision -> (author, subject)
        self._dirty: dict[str, str | None] = {}  # revisions noted since the last `tell` -> rollout author

    def load(self, rows: Iterable[tuple[str, str, str, str]]) -> None:
        """What the stored rollouts say (bundle, revision, phase, reason): their verdicts count as told
        (a notice is stored in the same transaction as the rollout change that caused it)."""
        for bundle, revision, phase, reason in rows:
            self._phases.setdefault(revision, {})[bundle] = (phase, reason)
        for revision, phases in self._phases.items():
            self._told[revision] = verdict(phases)

    def commit(self, revision: str, *, author: str | None, subject: str | None) -> None:
        """Who made a revision and what it says (the first line), for the notices about it."""
        self._who[revision] = (author, subject)

    @property
    def noted(self) -> bool:
        """Some change was noted and not told yet."""
        return bool(self._dirty)

    def note(self, r: ro.Rollout) -> None:
        """A rollout of `r.revision` started or changed (told by `tell`)."""
        self._phases.setdefault(r.revision, {})[r.bundle] = (str(r.phase), r.reason)
        self._dirty.setdefault(r.revision, r.author)

    def tell(self, *, at: float) -> list[Notice]:
        """A notice for each revision noted since the last call whose verdict changed: a pending revision is
        told once, however its waves go; a new halt is told again. Changes noted together (one store of
        the rollouts) are told together: a revision whose rollouts start and complete at once is told
        `success` only."""
        out: list[Notice] = []
        dirty, self._dirty = self._dirty, {}
        for revision, fallback_author in dirty.items():
            phases = self._phases.get(revision)
            if phases is None:
                continue
            now = verdict(phases)
            before = self._told.get(revision)
            if before is not None and (before.state, before.event) == (now.state, now.event):
                if now.state == PENDING or before.description == now.description:
                    continue
            self._told[revision] = now
            author, subject = self._who.get(revision, (fallback_author, None))
            out.append(
                Notice(
                    revision=revision,
                    state=now.state,
                    event=now.event,
                    description=now.description,
                    at=at,
                    bundles={b: p for b, (p, _) in sorted(phases.items())},
                    reasons={
                        b: why for b, (p, why) in sorted(phases.items()) if why and p != ro.Phase.COMPLETED
                    },
                    author=author or fallback_author,
                    subject=subject,
                )
            )
        self._forget()
        return out

    def changed(self, r: ro.Rollout, *, at: float) -> Notice | None:
        """`note` then `tell`, for one rollout."""
        self.note(r)
        told = self.tell(at=at)
        return told[0] if told else None

    def _forget(self) -> None:
        while len(self._phases) > MAX_REVISIONS:
            done = [rev for rev, v in self._told.items() if v.state != PENDING] or list(self._phases)
            rev = done[0]
            self._phases.pop(rev, None)
            self._told.pop(rev, None)
            self._who.pop(rev, None)


# -- receivers and payloads ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Receiver:
    """Where notices go. `key` names its queue in the outbox (stable across restarts, no secret in it)."""

    key: str
    kind: str  # webhook | github | gitlab
    url: str  # a webhook's URL; the API base URL of GitHub or GitLab
    format: str = JSON_FORMAT  # webhooks: json | slack
    repo: str = ""  # GitHub OWNER/NAME or GitLab project path
    label: str = ""  # how logs and metrics name it (no path, no query: a webhook URL may hold a token)


def label_of(url: str) -> str:
    """A URL as logs may show it: scheme and host only."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}"


def rfc3339(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def payload(
    notice: Notice, receiver: Receiver, *, instance: str, link: str | None, context: str
) -> tuple[str, dict[str, Any]]:
    """(path below the receiver's URL, JSON body) of one notice for one receiver."""
    if receiver.kind == GITHUB:
        body: dict[str, Any] = {
            "state": notice.state,
            "description": notice.description,
            "context": context,
        }
        if link:
            body["target_url"] = link
        owner_name = "/".join(urllib.parse.quote(p, safe="") for p in receiver.repo.split("/"))
        return f"/repos/{owner_name}/statuses/{notice.revision}", body
    if receiver.kind == GITLAB:
        body = {
            "state": _GITLAB_STATE[notice.state],
            "name": context,
            "description": notice.description,
        }
        if link:
            body["target_url"] = link
        return f"/projects/{urllib.parse.quote(receiver.repo, safe='')}/statuses/{notice.revision}", body
    if receiver.format == SLACK_FORMAT:
        return "", slack(notice, instance=instance, link=link)
    return "", document(notice, instance=instance, link=link)


def document(notice: Notice, *, instance: str, link: str | None) -> dict[str, Any]:
    """The generic JSON webhook body (docs/notifications.md)."""
    return {
        "kind": "fleet.dev/revision",
        "instance": instance,
        "revision": notice.revision,
        "event": notice.event,
        "state": notice.state,
        "description": notice.description,
        "bundles": dict(notice.bundles),
        "reasons": dict(notice.reasons),
        "author": notice.author,
        "subject": notice.subject,
        "at": rfc3339(notice.at),
        "url": link,
    }


def slack(notice: Notice, *, instance: str, link: str | None) -> dict[str, Any]:
    """A Slack incoming-webhook body (also read by Mattermost and Rocket.Chat): text plus one section."""
    short = notice.revision[:12]
    head = f"{_EMOJI[notice.state]} fleet `{instance}`: revision `{short}` {notice.event}"
    lines = [head, notice.description]
    if notice.subject:
        lines.append(f"> {_cut(notice.subject, 200)}" + (f" ({notice.author})" if notice.author else ""))
    if link:
        lines.append(f"<{link}|status page>")
    text = "\n".join(lines)
    return {"text": text, "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]}


def encode(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


# -- the repository a commit status is about ----------------------------------------------------------------

_SCP = re.compile(r"^(?:[^@/]+@)?(?P<host>[^:/]+):(?P<path>[^/].*)$")


def repo_path(url: str) -> str | None:
    """``OWNER/NAME`` (GitHub) or ``group/sub/project`` (GitLab) from a clone URL
    (``https://host/owner/name.git``, ``ssh://git@host/owner/name``, ``git@host:owner/name.git``);
    None for a local path or a URL without one."""
    text = url.strip()
    if "://" in text:
        parts = urllib.parse.urlsplit(text)
        if parts.scheme == "file":
            return None
        path = parts.path
    else:
        m = _SCP.match(text)
        if m is None or text.startswith(("/", ".", "~")):
            return None
        path = m.group("path")
    path = path.strip("/")
    if path.endswith(".git"):
        path = path[:-4]
    segments = [s for s in path.split("/") if s]
    if len(segments) < 2 or any(s in (".", "..") for s in segments):
        return None
    return "/".join(segments)
