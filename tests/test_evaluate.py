"""`inbox-bot eval`: a labelled corpus scored on a throw-away instance with the configured rules."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from inbox_bot.cli import main
from tests.conftest import CORPUS


def test_eval_scores_the_second_sample(capsys, tmp_path: Path) -> None:
    assert main(["eval", str(CORPUS / "sample2"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    print(f"\nsample2 via eval: accuracy {out['accuracy']} ({out['correct']}/{out['cases']})")
    assert out["cases"] == 80
    assert out["false_erasures"] == [] and out["missed_cancels"] == []
    assert out["accuracy"] >= 0.97
    assert sum(out["confusion"].values()) == 80


def test_eval_reports_wrong_cases_when_rules_change(capsys, tmp_path: Path) -> None:
    """A team that loses its English vocabulary sees the damage, case by case, before deploying."""
    rules = tmp_path / "rules"
    shutil.copytree(Path(__file__).parent.parent / "rules", rules)
    (rules / "intents" / "en.toml").unlink()
    cfg = tmp_path / "bot.toml"
    cfg.write_text('[paths]\nrules = "rules"\n')
    assert main(["--config", str(cfg), "eval", str(CORPUS / "sample")]) == 0
    text = capsys.readouterr().out
    assert "want queue_erasure got flag_human" in text
    assert "false erasures 0" in text


def test_eval_names_a_bad_corpus(capsys, tmp_path: Path) -> None:
    assert main(["eval", str(tmp_path)]) == 1
    assert "labels.jsonl" in capsys.readouterr().err
