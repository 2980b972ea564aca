"""What fleet tells people about a revision (fleet.core.notices): verdicts, when to tell, exact payloads."""

from __future__ import annotations

from dataclasses import replace

import pytest

from fleet.core import model, notices
from fleet.core import rollout as ro

R = "c" * 40


def rollout(bundle: str, phase: ro.Phase = ro.Phase.PROGRESSING, reason: str = "") -> ro.Rollout:
    spec = model.RolloutSpec(waves=(model.WaveSpec(name="all"),))
    r = ro.start(
        bundle=bundle,
        revision=R,
        spec=spec,
        waves=[("all", ("eu-1",))],
        from_revisions={},
        now=0.0,
        author="Ada",
    )
    return replace(r, phase=phase, reason=reason)


def test_a_revision_is_pending_once_however_many_bundles_and_waves_then_succeeds_when_all_completed() -> None:
    t = notices.Tracker()
    t.commit(R, author="Ada Lovelace", subject="web: bump image")
    first = t.changed(rollout("web"), at=1.0)
    assert first is not None and (first.state, first.event) == ("pending", "started")
    assert (first.author, first.subject) == ("Ada Lovelace", "web: bump image")
    assert t.changed(rollout("db"), at=2.0) is None
    assert t.changed(replace(rollout("web"), wave=1), at=3.0) is None
    assert t.changed(rollout("web", ro.Phase.COMPLETED), at=4.0) is None  # db still rolling out
    done = t.changed(rollout("db", ro.Phase.COMPLETED), at=5.0)
    assert done is not None and (done.state, done.event, done.description) == (
        "success",
        "completed",
        "rolled out: db, web",
    )
    assert done.bundles == {"db": "Completed", "web": "Completed"}


def test_a_halt_fails_the_revision_a_second_halt_is_told_and_resuming_to_completion_succeeds() -> None:
    t = notices.Tracker()
    t.changed(rollout("web"), at=1.0)
    t.changed(rollout("db"), at=1.0)
    halted = t.changed(rollout("web", ro.Phase.HALTED, "eu-1 failed (degraded)"), at=2.0)
    assert halted is not None and (halted.state, halted.event) == ("failure", "halted")
    assert halted.description == "web halted: eu-1 failed (degraded)"
    assert halted.reasons == {"web": "eu-1 failed (degraded)"}
    assert t.changed(rollout("web", ro.Phase.HALTED, "eu-1 failed (degraded)"), at=2.5) is None
    again = t.changed(rollout("db", ro.Phase.HALTED, "us-1 failed (apply)"), at=3.0)
    assert again is not None and again.description == "db halted: us-1 failed (apply)"
    t.changed(rollout("db", ro.Phase.COMPLETED), at=4.0)
    back = t.changed(rollout("web", ro.Phase.PROGRESSING), at=5.0)
    assert back is not None and back.state == "pending"
    ok = t.changed(rollout("web", ro.Phase.COMPLETED), at=6.0)
    assert ok is not None and ok.state == "success"


@pytest.mark.parametrize(
    ("phase", "reason", "state", "event"),
    [
        (ro.Phase.ROLLED_BACK, "rolled back by grace: bad", "failure", "rolledBack"),
        (ro.Phase.ABORTED, "aborted by grace", "error", "aborted"),
        (ro.Phase.SUPERSEDED, "superseded by revision dddddddddddd", "error", "superseded"),
    ],
)
def test_a_revision_that_did_not_complete_is_told_why(
    phase: ro.Phase, reason: str, state: str, event: str
) -> None:
    t = notices.Tracker()
    t.changed(rollout("web"), at=1.0)
    n = t.changed(rollout("web", phase, reason), at=2.0)
    assert n is not None and (n.state, n.event, n.description) == (state, event, f"web {reason}")


def test_what_the_stored_rollouts_say_counts_as_told_after_a_restart() -> None:
    t = notices.Tracker()
    t.load([("web", R, "Halted", "eu-1 failed"), ("db", R, "Completed", "")])
    assert t.changed(rollout("web", ro.Phase.HALTED, "eu-1 failed"), at=1.0) is None
    n = t.changed(rollout("web", ro.Phase.COMPLETED), at=2.0)
    assert n is not None and n.state == "success"


NOTICE = notices.Notice(
    revision=R,
    state="failure",
    event="halted",
    description="web halted: eu-1 failed (degraded)",
    at=1767225600.0,
    bundles={"web": "Halted"},
    reasons={"web": "eu-1 failed (degraded)"},
    author="Ada",
    subject="web: bump image",
)
LINK = "https://fleet.example.com/"


def test_the_github_commit_status_payload() -> None:
    r = notices.Receiver(key="github", kind="github", url=notices.GITHUB_API, repo="acme/gitops")
    path, body = notices.payload(NOTICE, r, instance="fleet", link=LINK, context="fleet/fleet")
    assert path == f"/repos/acme/gitops/statuses/{R}"
    assert body == {
        "state": "failure",
        "description": "web halted: eu-1 failed (degraded)",
        "context": "fleet/fleet",
        "target_url": LINK,
    }


def test_the_gitlab_commit_status_payload_names_its_states_and_quotes_the_project_path() -> None:
    r = notices.Receiver(key="gitlab", kind="gitlab", url=notices.GITLAB_API, repo="acme/infra/gitops")
    path, body = notices.payload(NOTICE, r, instance="fleet", link=None, context="fleet/fleet")
    assert path == f"/projects/acme%2Finfra%2Fgitops/statuses/{R}"
    assert body == {
        "state": "failed",
        "name": "fleet/fleet",
        "description": "web halted: eu-1 failed (degraded)",
    }
    pending = replace(NOTICE, state="pending")
    assert notices.payload(pending, r, instance="fleet", link=None, context="c")[1]["state"] == "running"


def test_the_json_and_slack_webhook_payloads() -> None:
    hook = notices.Receiver(key="webhook-1", kind="webhook", url="https://hooks.example.com/x")
    path, body = notices.payload(NOTICE, hook, instance="prod", link=LINK, context="fleet/prod")
    assert path == ""
    assert body == {
        "kind": "fleet.dev/revision",
        "instance": "prod",
        "revision": R,
        "event": "halted",
        "state": "failure",
        "description": "web halted: eu-1 failed (degraded)",
        "bundles": {"web": "Halted"},
        "reasons": {"web": "eu-1 failed (degraded)"},
        "author": "Ada",
        "subject": "web: bump image",
        "at": "2026-01-01T00:00:00Z",
        "url": LINK,
    }
    slack = replace(hook, format="slack")
    _, body = notices.payload(NOTICE, slack, instance="prod", link=LINK, context="fleet/prod")
    text = (
        ":x: fleet `prod`: revision `cccccccccccc` halted\nweb halted: eu-1 failed (degraded)\n"
        "> web: bump image (Ada)\n<https://fleet.example.com/|status page>"
    )
    assert body == {"text": text, "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]}


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("https://github.com/acme/gitops.git", "acme/gitops"),
        ("https://x-access-token:secret@github.com/acme/gitops", "acme/gitops"),
        ("git@github.com:acme/gitops.git", "acme/gitops"),
        ("ssh://git@gitlab.example.com:2222/acme/infra/gitops.git", "acme/infra/gitops"),
        ("/srv/git/gitops", None),
        ("file:///srv/git/gitops", None),
        ("https://github.com/gitops", None),
    ],
)
def test_the_repository_of_a_commit_status_comes_from_the_clone_url(url: str, path: str | None) -> None:
    assert notices.repo_path(url) == path


def test_a_log_label_never_shows_a_webhook_path_or_credentials() -> None:
    assert (
        notices.label_of("https://user:pw@hooks.slack.com/services/T0/B0/SECRET?x=1")
        == "https://hooks.slack.com"
    )


def test_changes_noted_together_are_told_together_and_a_rollout_that_ends_at_once_is_told_success_only() -> (
    None
):
    t = notices.Tracker()
    t.note(rollout("web"))
    t.note(rollout("db"))
    t.note(rollout("web", ro.Phase.COMPLETED))
    t.note(rollout("db", ro.Phase.COMPLETED))
    assert t.noted
    [n] = t.tell(at=1.0)
    assert (n.state, n.description) == ("success", "rolled out: db, web")
    assert not t.noted and t.tell(at=2.0) == []
