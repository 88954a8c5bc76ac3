"""The model directory: what a damaged, foreign or hand-edited model gets (one-line errors)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from epitensor._utils import EpitensorError
from epitensor.cli import app
from epitensor.estimators.avocado import Avocado
from epitensor.nn import modeldir

SAVED = Path(__file__).resolve().parent / "data" / "saved-model-v1"


def _impute(model: Path, out: Path, *extra: str):
    args = ["impute", str(model), "--celltype", "E065", "--assay", "H3K4me1", "--out",
            str(out), "--quiet", *extra]  # fmt: skip
    return CliRunner().invoke(app, args)


def _refused(result, *phrases: str) -> None:
    """A one-line error (exit 1, no traceback) containing every phrase."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    for phrase in phrases:
        assert phrase in result.output, result.output


@pytest.fixture
def old_copy(tmp_path) -> Path:
    """A copy of the model saved before checksums existed."""
    return Path(shutil.copytree(SAVED, tmp_path / "old"))


@pytest.fixture
def new_copy(tmp_path) -> Path:
    """The saved model re-saved by this release (with checksums)."""
    Avocado.load(SAVED).save(tmp_path / "new")
    return tmp_path / "new"


def test_save_records_a_checksum_of_every_weight_file(new_copy):
    config = json.loads((new_copy / "config.json").read_text())
    assert set(config["checksums"]) == {
        "weights.safetensors", "genome/head.safetensors", "genome/next.safetensors", "config.json"
    }  # fmt: skip
    for name, digest in config["checksums"].items():
        if name == "config.json":  # its own: of its contents without it (issue 35, W5)
            assert modeldir.config_digest(config) == digest
        else:
            assert modeldir.sha256_of(new_copy / name) == digest


def test_a_deleted_tensor_is_named(old_copy, tmp_path):
    weights = load_file(str(old_copy / "weights.safetensors"))
    del weights["network.2.weight"]
    save_file(weights, str(old_copy / "weights.safetensors"))
    out = tmp_path / "out.bw"
    _refused(_impute(old_copy, out), "weights.safetensors", "'network.2.weight'")
    assert not out.exists()


def test_a_foreign_weight_file_is_refused(old_copy, tmp_path):
    """Another model's network (other sizes): the first tensor that differs is named."""
    other = {k: v for k, v in load_file(str(old_copy / "weights.safetensors")).items()}
    other["network.0.weight"] = torch.zeros(32, other["network.0.weight"].shape[1])
    other["extra.bias"] = torch.zeros(3)
    save_file(other, str(old_copy / "weights.safetensors"))
    _refused(_impute(old_copy, tmp_path / "o.bw"), "'extra.bias'", "another model")
    del other["extra.bias"]
    save_file(other, str(old_copy / "weights.safetensors"))
    _refused(_impute(old_copy, tmp_path / "o.bw"), "'network.0.weight'", "(16, 20)")


def test_a_same_shaped_foreign_file_is_caught_by_its_checksum(new_copy, tmp_path):
    weights = load_file(str(new_copy / "weights.safetensors"))
    save_file({k: v + 1 for k, v in weights.items()}, str(new_copy / "weights.safetensors"))
    _refused(_impute(new_copy, tmp_path / "o.bw"), "weights.safetensors", "checksum")


def test_a_flipped_byte_in_an_axis_file_is_caught(new_copy, tmp_path):
    path = new_copy / "genome" / "next.safetensors"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x40
    path.write_bytes(bytes(data))
    model = Avocado.load(new_copy)  # the axis is read lazily: the error comes on use
    model.genome_factors("head")
    with pytest.raises(EpitensorError, match=r"next\.safetensors does not match the checksum"):
        model.genome_factors("next")
    _refused(_impute(new_copy, tmp_path / "o.bw"), "next.safetensors", "checksum")


def test_a_corrupt_safetensors_file_is_one_line(old_copy, tmp_path):
    (old_copy / "genome" / "head.safetensors").write_bytes(b"\x07garbage, not a header")
    _refused(_impute(old_copy, tmp_path / "o.bw"), "head.safetensors", "not a readable")


@pytest.mark.parametrize(
    ("edit", "phrase"),
    [
        (lambda c: c.pop("celltypes_"), "lacks the key 'celltypes_'"),
        (lambda c: c.update(genome_axes_=[1, 2]), "key 'genome_axes_' is a JSON list"),
        (lambda c: c["module"].update(n_nodes="16"), "module.n_nodes"),
        (lambda c: c["params"].update(n_trees=3), "n_trees"),
        (lambda c: c.update(layout_={"name": "x"}), "does not describe a model"),
    ],
)
def test_a_hand_edited_config_is_one_line(old_copy, tmp_path, edit, phrase):
    config = json.loads((old_copy / "config.json").read_text())
    edit(config)
    (old_copy / "config.json").write_text(json.dumps(config))
    _refused(_impute(old_copy, tmp_path / "o.bw"), "config.json", phrase)


def test_config_that_is_not_json_is_one_line(old_copy, tmp_path):
    (old_copy / "config.json").write_text("{not json")
    _refused(_impute(old_copy, tmp_path / "o.bw"), "config.json", "not valid JSON")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_device_cuda_without_cuda_is_one_line(tmp_path):
    out = tmp_path / "cuda"
    _refused(_impute(SAVED, out, "--device", "cuda"), "'cuda'", "--device cpu")
    assert not out.exists()


def test_release_genome_axis_keeps_checksums_right(new_copy, tmp_path):
    model = Avocado.load(new_copy)
    model.genome_module("next")
    model.release_genome_axis(new_copy, "next")
    again = Avocado.load(new_copy)
    np.testing.assert_array_equal(again.genome_factors("next"), model.genome_factors("next"))


def test_colliding_safe_names_get_distinct_files(old_copy, tmp_path):
    """K5.62 + x and K5 + 62.x are both K5.62.x on disk: neither file replaces the other.

    (A name such as K5/62, which the file name would change, is refused when the
    model is loaded: trial E2 of issue 35.)
    """
    config = json.loads((old_copy / "config.json").read_text())
    config["celltypes_"] = ["K5.62", "K5", *config["celltypes_"][2:]]
    config["assays_"] = ["x", "62.x", *config["assays_"][2:]]
    (old_copy / "config.json").write_text(json.dumps(config))
    out = tmp_path / "folder"
    args = ["impute", str(old_copy), "--celltype", "K5.62", "--assay", "x", "--celltype",
            "K5", "--assay", "62.x", "--out", str(out), "--bedgraph", "--arcsinh",
            "--quiet"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    files = sorted(p.name for p in out.glob("*.bedGraph"))
    assert len(files) == 2 and all(f.startswith("K5.62.x-") for f in files), files
    model = Avocado.load(old_copy)
    params = json.loads((out / "impute.json").read_text())
    for (celltype, assay), name in zip(params["tracks"], params["files"]):
        lines = Path(name).read_text().splitlines()[1:11]
        values = np.array([float(line.split("\t")[3]) for line in lines])
        expected = model.predict(celltype, assay, axis="head", start=0, end=10)
        np.testing.assert_allclose(values, expected, rtol=1e-6, atol=1e-6)


def test_saving_elsewhere_never_copies_a_damaged_axis(new_copy, tmp_path):
    """An axis never loaded is copied as a file: its checksum is checked first."""
    path = new_copy / "genome" / "head.safetensors"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01
    path.write_bytes(bytes(data))
    model = Avocado.load(new_copy)
    with pytest.raises(EpitensorError, match=r"head\.safetensors does not match the checksum"):
        model.save(tmp_path / "elsewhere")
    assert not (tmp_path / "elsewhere").exists()
