"""The normalisation of differential transcripts (tests/support/differential.py): what must compare equal."""

from __future__ import annotations

import pytest

from tests.support import differential


def _kubectl_run(manifest: str) -> differential.Transcript:
    transcript = differential.Transcript()
    transcript.add(
        {
            "kubectl": ["apply", "-f", manifest],
            "rc": 1,
            "stdout": "",
            "stderr": f'error: error validating "{manifest}": unknown field "spec.bogus"\n',
        }
    )
    return transcript


@pytest.mark.parametrize(
    ("sim_dir", "real_dir"),
    [
        # one run of pytest
        ("/tmp/pytest-of-root/pytest-7/test_apply_sim_0", "/tmp/pytest-of-root/pytest-7/test_apply_real_0"),
        # a pytest-xdist worker's folder, `popen-gwN`, between the run's and the test's
        (
            "/tmp/pytest-of-root/pytest-7/popen-gw1/test_apply_sim_0",
            "/tmp/pytest-of-root/pytest-7/popen-gw1/test_apply_real_0",
        ),
    ],
)
def test_the_temporary_folders_of_the_sim_run_and_the_real_run_of_a_case_compare_equal(
    sim_dir: str, real_dir: str
) -> None:
    sim = differential.normalise(_kubectl_run(f"{sim_dir}/manifest.yaml"), "diff-1")
    real = differential.normalise(_kubectl_run(f"{real_dir}/manifest.yaml"), "diff-2")
    assert differential.compare(sim, real) == ""
    assert sim[0]["kubectl"] == ["apply", "-f", "<tmp>/manifest.yaml"]
