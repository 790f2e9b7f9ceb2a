"""benchmarks/paired.py: paired differences of two quality reports, matched by face name."""

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "paired.py"


def _report(folder: Path, name: str, rows: dict[str, dict[str, float]]) -> None:
    (folder / "sr8").mkdir(parents=True)
    methods = [{"name": "bicubic", "kind": "baseline", "per_image": []},
               {"name": name, "kind": "model", "per_image": [{"name": k, **v} for k, v in rows.items()]}]
    (folder / "sr8" / "report.json").write_text(json.dumps({"methods": methods}))


def test_paired_differences_match_faces_by_name(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("paired", SCRIPT)
    paired = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(paired)
    _report(tmp_path / "a", "mmrb", {"x.png": {"psnr": 22.0, "lpips": 0.30}, "y.png": {"psnr": 20.0, "lpips": 0.40},
                                     "only_a.png": {"psnr": 99.0, "lpips": 0.0}})
    _report(tmp_path / "b", "resblock", {"y.png": {"psnr": 19.0, "lpips": 0.41}, "x.png": {"psnr": 21.5, "lpips": 0.32}})
    assert paired.main([str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "mmrb minus resblock" in out
    # differences +0.5 and +1.0: mean +0.75, standard error 0.25; LPIPS -0.02 and -0.01: mean -0.015 ± 0.005
    assert "| sr8 | 2 | +0.750 ± 0.250 | -0.015 ± 0.005 |" in out
    assert paired.main([str(tmp_path / "a"), str(tmp_path / "nothing")]) == 2
