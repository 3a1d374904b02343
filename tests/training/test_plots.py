import subprocess
import sys

import matplotlib.pyplot as plt
import mlflow
import pytest

from sentiment_flow import plots
from sentiment_flow.training import train

from test_train import tiny_config
from wandb_offline import read_offline_run


@pytest.fixture
def no_open_figures():
    plt.close("all")
    yield
    plt.close("all")


@pytest.mark.slow
def test_training_leaves_no_figure_open(no_open_figures, tiny_model_dir, tiny_data_dir):
    # pyplot keeps every figure it made until it is closed: 3 per training, "More than 20 figures" by the 7th.
    result = train(tiny_config(tiny_model_dir, tiny_data_dir, epochs=1))
    # Only mlflow.models.evaluate's own: its pyplot.clf() makes a blank figure that it never closes, and
    # reuses it in the next evaluation (one per process).
    assert len(plt.get_fignums()) <= 1
    assert [number for number in plt.get_fignums() if plt.figure(number).axes] == []
    logged = {a.path for a in mlflow.MlflowClient().list_artifacts(result.run_id, "plots")}
    assert logged == {
        "plots/confusion_matrix.png",
        "plots/label_distribution.png",
        "plots/text_length_by_label.png",
        "plots/reliability_diagram.png",  # the calibration's, before and after
    }


def test_every_figure_saves_as_png_without_opening_a_pyplot_figure(no_open_figures, tmp_path):
    figures = [
        plots.label_distribution({"train": [0, 1, 2, 2], "test": [0, 1]}),
        plots.length_by_label([3, 5, 8, 13], [0, 1, 2, 2], max_length=8),
        plots.confusion_matrix([0, 1, 2, 2], [0, 2, 2, 1]),
        plots.compare_shares(["a", "b"], [3, 1], [1, 3], "Shares", psi=0.5),
    ]
    for i, figure in enumerate(figures):
        figure.savefig(tmp_path / f"{i}.png")
        assert (tmp_path / f"{i}.png").read_bytes().startswith(b"\x89PNG")
    assert plt.get_fignums() == []


@pytest.mark.slow  # a fresh interpreter importing wandb
def test_a_figure_becomes_a_wandb_image_in_a_process_that_never_imported_pyplot(tmp_path):
    # Training hands each figure to wandb.Image, which compares it with matplotlib.pyplot.
    code = (
        "import sys, wandb; from sentiment_flow import plots; "
        "image = wandb.Image(plots.label_distribution({'train': [0, 1, 2]})); "
        "assert image.image.size[0] > 100; print('image', image.image.size)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("image (")


@pytest.mark.slow  # a W&B run in its own process, about 3 s
def test_plots_logged_before_training_leave_the_first_loss_step_to_the_trainer(tmp_path):
    # Two figures logged before a short training's first loss at step 1 made W&B's step 2, and W&B dropped that
    # loss point ("Tried to log to step 1 that is less than the current step 2").
    code = (
        "import mlflow, wandb; from sentiment_flow import plots; from sentiment_flow.training import tracking; "
        f"mlflow.set_tracking_uri('sqlite:///{tmp_path}/mlflow.db'); wandb.init(mode='offline', dir={str(tmp_path)!r}); "
        "run = mlflow.start_run(); "
        "[tracking.log_figure(plots.label_distribution({'train': [0, 1, 2]}), f'{n}.png') for n in ('a', 'b')]; "
        "wandb.run.log({'loss': 0.5}, step=1); wandb.run.log({'loss': 0.4}, step=2); wandb.finish(); mlflow.end_run()"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "less than the current step" not in proc.stderr
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    history = read_offline_run(run_dir)["history"]
    assert [row["_step"] for row in history if "loss" in row] == [1, 2]
    assert {"plots/a/_type", "plots/b/_type"} <= {key for row in history for key in row}
