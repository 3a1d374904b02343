"""`monitor` against the team server over HTTP (basic auth, proxied artifacts): the same reads and writes as
on sqlite, through MLflow's REST client."""

import mlflow
import pytest
from click.testing import CliRunner

from sentiment_flow.cli import cli
from sentiment_flow.config import MONITORING_EXPERIMENT

from test_monitor import NAME, record, register_version, sample
from test_server import as_admin, team  # noqa: F401 - fixtures

pytestmark = pytest.mark.slow  # starts PostgreSQL and mlflow server


def test_monitor_reads_and_records_through_the_team_server(as_admin, tmp_path):  # noqa: F811 - the fixture
    register_version()
    record(tmp_path, *sample(400, seed=1)[:2])
    record(tmp_path, *sample(400, seed=2, sharpness=0.4)[:2])  # a less confident job: alerts

    result = CliRunner().invoke(cli, ["monitor", NAME])

    assert result.exit_code == 3, result.output
    (run,) = mlflow.search_runs(experiment_names=[MONITORING_EXPERIMENT], output_format="list")
    assert run.data.params["scoring_runs"] == "2" and run.data.tags["verdict"] == "alert"
    page = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/report.html")  # through the artifact proxy
    assert f"Monitoring {NAME} version 1" in page
