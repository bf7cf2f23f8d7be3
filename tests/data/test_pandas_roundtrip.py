"""to_wide() -> pandas -> dataset keeps env id and action bounds; `data convert` can set them; training works after."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
from dime_offline_cli.main import app
from typer.testing import CliRunner

from dime_offline.checkpoints import read_checkpoint_meta
from dime_offline.data.load import load_dataset
from dime_offline.data.schema import PANDAS_ATTRS_KEY
from dime_offline.trainers.offline import PretrainConfig, pretrain

SAMPLE = Path(__file__).resolve().parents[2] / "datasets" / "samples" / "pendulum-random-tiny.parquet"
TINY_AGENT = {"critic_hidden": [16, 16], "score_hidden": [16, 16], "score_frequencies": 4, "score_time_hidden": 8,
              "diffusion_steps": 2, "batch_size": 16}


def _load(source: object, **kwargs: object):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_dataset(source, **kwargs)


@pytest.fixture(scope="module")
def original():
    data = _load(SAMPLE)
    assert data.metadata.env_id == "Pendulum-v1" and data.metadata.action_low == [-2.0]
    return data


def test_a_pandas_round_trip_keeps_the_metadata(original, tmp_path: Path) -> None:
    frame = original.to_wide()
    # Ordinary pandas work keeps attrs: a copy, whole episodes selected, a column added and dropped.
    edited = frame[frame.episode_id.isin(frame.episode_id.unique()[:5])].copy()
    edited["extra"] = 1.0
    edited = edited.drop(columns="extra").reset_index(drop=True)
    back = _load(edited)
    assert back.metadata == original.metadata
    # And a DataFrame.to_parquet file (pyarrow stores attrs with the table) reads back the same.
    path = tmp_path / "wide.parquet"
    edited.to_parquet(path)
    assert _load(path).metadata == original.metadata
    # Without attrs the frame says nothing about bounds: the case `data convert --set` is for.
    edited.attrs.pop(PANDAS_ATTRS_KEY)
    bare = _load(edited)
    assert bare.metadata.env_id is None and bare.metadata.action_low is None
    assert _load(edited, metadata={"env_id": "Pendulum-v1", "action_low": [-2.0], "action_high": [2.0]}).metadata.action_high == [2.0]


def test_data_convert_records_env_id_and_bounds(original, tmp_path: Path) -> None:
    frame = original.to_wide()
    frame.attrs.clear()
    bare = tmp_path / "bare.parquet"
    frame.to_parquet(bare)
    fixed = tmp_path / "fixed.parquet"
    result = CliRunner().invoke(app, ["data", "convert", str(bare), str(fixed), "--env-id", "Pendulum-v1",
                                      "--set", "action_low=[-2.0]", "--set", "action_high=[2.0]", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["transitions"] == len(original)
    meta = _load(fixed).metadata
    assert (meta.env_id, meta.action_low, meta.action_high) == ("Pendulum-v1", [-2.0], [2.0])
    # Bounds the actions break are refused, one line, nothing written.
    result = CliRunner().invoke(app, ["data", "convert", str(bare), str(tmp_path / "bad.parquet"),
                                      "--set", "action_low=[-1.0]", "--set", "action_high=[1.0]"])
    assert result.exit_code == 2 and "outside the declared bounds" in result.stderr
    assert not (tmp_path / "bad.parquet").exists()


def test_pretraining_works_after_a_pandas_round_trip(original, tmp_path: Path) -> None:
    path = tmp_path / "from-pandas.parquet"
    original.to_wide().to_parquet(path)
    result = pretrain(PretrainConfig(
        data=str(path), steps=3, out_dir=str(tmp_path / "run"), agent=dict(TINY_AGENT), eval_every=0, eval_episodes=1,
        max_episode_steps=5, tensorboard=False, quiet=True,
    ))
    summary = result.to_dict()
    assert summary["updates"] == 3 and summary["env"] == "Pendulum-v1" and summary["final"]["episodes"] == 1
    assert read_checkpoint_meta(summary["checkpoint"]).env_id == "Pendulum-v1"
