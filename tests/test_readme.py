"""The README's "MAML on your own model" example runs as printed (with fewer iterations)."""
import re
from pathlib import Path

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_the_own_model_example_meta_trains_and_adapts(tmp_path, monkeypatch, capsys):
    section = README.split("## MAML on your own model", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "iterations=2000" in code and 'out="runs/lines"' in code
    monkeypatch.chdir(tmp_path)
    exec(code.replace("iterations=2000", "iterations=20"), {"__name__": "readme"})
    assert (tmp_path / "runs/lines/checkpoint.pt").is_file()
    assert re.fullmatch(r"tensor\([\d.e+-]+\)\n", capsys.readouterr().out)
