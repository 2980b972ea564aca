"""Every option of `fleet serve`, and the shared options of the other commands, is checked at start.

A bad value is refused before anything runs (no state directory created, no kubeconfig read, no socket
bound) with exit 2 and one line naming the option (and the environment variable it came from). The
commands run in-process through typer's `CliRunner`; the kubeconfig given does not exist, so a value that
slipped through would end on a different error ("kubeconfig not found") and fail the test.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from fleet import cli

MISSING_KUBECONFIG = "/nonexistent/kubeconfig"


def invoke(args: list[str], env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(cli.app, args, env=env, catch_exceptions=False)
    return result.exit_code, result.output


@pytest.fixture
def serve_args(tmp_path: Path) -> list[str]:
    (tmp_path / "repo").mkdir()
    return [
        "serve",
        "--repo",
        str(tmp_path / "repo"),
        "--kubeconfig",
        MISSING_KUBECONFIG,
        "--state-dir",
        str(tmp_path / "state"),
        "--listen",
        "127.0.0.1:0",
    ]


SERVE_BAD = [
    ("--interval", "0"),
    ("--interval", "nan"),
    ("--interval", "inf"),
    ("--interval", "100ms"),
    ("--interval", "30d"),
    ("--resync", "0"),
    ("--resync", "nan"),
    ("--health-timeout", "0"),
    ("--health-timeout", "NaN"),
    ("--request-timeout", "0"),
    ("--request-timeout", "nan"),
    ("--request-timeout", "1e999"),
    ("--retry-budget", "nan"),
    ("--retry-budget", "-1"),
    ("--round-timeout", "0"),
    ("--round-timeout", "nan"),
    ("--round-timeout", "1s"),
    ("--concurrency", "0"),
    ("--concurrency", "-4"),
    ("--qps", "0"),
    ("--qps", "nan"),
    ("--qps", "inf"),
    ("--qps", "-5"),
    ("--burst", "0"),
    ("--listen", "8080"),
    ("--listen", "127.0.0.1:99999"),
    ("--listen", "127.0.0.1:http"),
    ("--instance", "Team A!"),
    ("--instance", ""),
    ("--instance", "a" * 64),
    ("--instance", "-fleet"),
    ("--log-level", "chatty"),
    ("--branch", ""),
    ("--branch", "feature..x"),
    ("--branch", "has space"),
    ("--rev", ""),
    ("--path", "../elsewhere"),
    ("--path", "/etc"),
    ("--otlp-endpoint", "ftp://collector:4318"),
    ("--otlp-endpoint", "collector:4318"),
    ("--jaeger-url", "jaeger:16686"),
    ("--git-password-env", "FLEET_TEST_SURELY_NOT_SET"),
    ("--git-password-file", "/nonexistent/token"),
    ("--git-ssh-key", "/nonexistent/id_ed25519"),
    ("--git-username", ""),
    ("--webhook-secret-file", "/nonexistent/secret"),
    ("--api-token-file", "/nonexistent/token"),
    ("--history-retention", "10m"),
    ("--history-retention", "4000d"),
    ("--history-retention", "soon"),
    ("--notify-url", "hooks.example.com/x"),
    ("--notify-format", "xml"),
    ("--commit-status", "bitbucket"),
    ("--commit-status-url", "https://api.github.com"),
    ("--external-url", "fleet.example.com"),
]


@pytest.mark.parametrize(("option", "value"), SERVE_BAD)
def test_a_bad_serve_option_is_refused_at_start_naming_it(
    serve_args: list[str], tmp_path: Path, option: str, value: str
) -> None:
    code, out = invoke([*serve_args, option, value])
    assert code == 2, out
    assert f"error: {option}" in out, out
    assert "kubeconfig not found" not in out
    assert not (tmp_path / "state").exists(), "nothing may be created before the options are checked"


def test_a_bad_value_from_the_environment_names_the_option_and_the_variable(serve_args: list[str]) -> None:
    code, out = invoke(serve_args, env={"FLEET_INTERVAL": "0"})
    assert code == 2, out
    assert "error: --interval (from FLEET_INTERVAL)" in out, out


def test_a_state_dir_that_is_a_file_is_refused(serve_args: list[str], tmp_path: Path) -> None:
    afile = tmp_path / "not-a-dir"
    afile.write_text("x")
    code, out = invoke([*serve_args, "--state-dir", str(afile)])
    assert code == 2, out
    assert "error: --state-dir" in out and "not a directory" in out, out


def test_good_serve_options_pass_the_checks(serve_args: list[str]) -> None:
    code, out = invoke(
        [
            *serve_args,
            "--interval",
            "1s",
            "--resync",
            "1m",
            "--request-timeout",
            "250ms",
            "--retry-budget",
            "0",
            "--qps",
            "0.5",
            "--burst",
            "1",
            "--instance",
            "team-a",
            "--log-level",
            "WARNING",
            "--branch",
            "release/1.2",
            "--path",
            "fleet/prod",
            "--otlp-endpoint",
            "http://collector:4318",
        ]
    )
    assert code == 2, out
    assert "kubeconfig not found" in out, out  # every option was accepted; the missing file is next


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--commit-status", "github"], "--commit-status-token-file: needed with --commit-status"),
        (
            ["--commit-status", "github", "--commit-status-token-file", "/nonexistent/token"],
            "--commit-status-token-file /nonexistent/token: cannot read",
        ),
        (
            ["--commit-status", "gitlab", "--commit-status-token-file", "TOKEN"],
            "--commit-status-repo: needed: the --repo of fleet serve names no repository (the GitLab project path)",
        ),
        (
            [
                "--commit-status",
                "github",
                "--commit-status-token-file",
                "TOKEN",
                "--commit-status-repo",
                "a/b/c",
            ],
            "--commit-status-repo: 'a/b/c' is not OWNER/NAME",
        ),
        (
            ["--notify-url", "https://hooks.example.com/a", "--notify-url", "https://hooks.example.com/a"],
            "--notify-url (number 2): given twice",
        ),
    ],
)
def test_commit_status_and_notification_options_are_checked_together_at_start(
    serve_args: list[str], tmp_path: Path, extra: list[str], message: str
) -> None:
    token = tmp_path / "token"
    token.write_text("a-token\n")
    code, out = invoke([*serve_args, *[str(token) if a == "TOKEN" else a for a in extra]])
    assert code == 2, out
    assert f"error: {message}" in out, out
    assert "a-token" not in out and not (tmp_path / "state").exists()


def test_good_notification_options_pass_the_checks(serve_args: list[str], tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("a-token\n")
    code, out = invoke(
        [
            *serve_args,
            "--history-retention",
            "90d",
            "--notify-url",
            "https://hooks.slack.com/services/T0/B0/X",
            "--notify-url",
            "http://127.0.0.1:9/hook",
            "--notify-format",
            "slack",
            "--commit-status",
            "gitlab",
            "--commit-status-url",
            "https://gitlab.example.com/api/v4",
            "--commit-status-token-file",
            str(token),
            "--commit-status-repo",
            "platform/infra/gitops",
            "--external-url",
            "https://fleet.example.com",
        ]
    )
    assert code == 2, out
    assert "kubeconfig not found" in out, out  # every option was accepted; the missing file is next


@pytest.mark.parametrize(
    ("command", "option", "value"),
    [
        ("sync", "--concurrency", "0"),
        ("sync", "--timeout", "0"),
        ("sync", "--timeout", "nan"),
        ("sync", "--request-timeout", "0"),
        ("sync", "--retry-budget", "inf"),
        ("sync", "--round-timeout", "5s"),
        ("sync", "--instance", "Team A!"),
        ("sync", "--rev", ""),
        ("sync", "--path", "../x"),
        ("diff", "--concurrency", "-1"),
        ("diff", "--request-timeout", "nan"),
        ("diff", "--retry-budget", "-1s"),
        ("diff", "--round-timeout", "inf"),
        ("diff", "--instance", "UPPER"),
        ("diff", "--rev", ""),
    ],
)
def test_a_bad_shared_option_of_sync_and_diff_is_refused_at_start(
    tmp_path: Path, command: str, option: str, value: str
) -> None:
    code, out = invoke([command, str(tmp_path), "--kubeconfig", MISSING_KUBECONFIG, option, value])
    assert code == 2, out
    assert f"error: {option}" in out, out


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["status", "--timeout", "0"], "--timeout"),
        (["status", "--timeout", "nan"], "--timeout"),
        (["status", "--timeout", "-1"], "--timeout"),
        (["status", "--server", "ftp://127.0.0.1:1"], "--server"),
        (["demo", "--interval", "0"], "--interval"),
        (["demo", "--listen", "nowhere"], "--listen"),
        (["sim", "--clusters", "-1"], "--clusters"),
        (["sim", "--workload-delay", "nan"], "--workload-delay"),
        (["sim", "--listen", "127.0.0.1:70000"], "--listen"),
    ],
)
def test_the_other_commands_refuse_bad_values_naming_the_option(
    tmp_path: Path, args: list[str], option: str
) -> None:
    if args[0] == "demo":
        args = [*args, "--dir", str(tmp_path / "demo")]
    code, out = invoke(args)
    assert code == 2, out
    assert f"error: {option}" in out, out
    assert not (tmp_path / "demo").exists()
