"""The report's pieces without a browser: colour scale, clipping, token texts, safe embedding, CLI."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from influence_trace.demo.tiny_model import build_tokenizer
from influence_trace.report import html as report
from influence_trace.report.svg import colour

from tests.report.runs import random_rows, write_run


def test_colour_scale_is_diverging_and_clamped() -> None:
    assert colour(0.0) == "rgb(255,255,255)"
    assert colour(1.0) == colour(7.0) == "rgb(178,24,43)"
    assert colour(-1.0) == "rgb(33,102,172)"


def test_clip_is_robust_to_one_outlier() -> None:
    scores = np.r_[np.linspace(-1, 1, 1000), 1e6, np.nan]
    assert 0.9 < report.clip_value(scores) < 1.1
    assert report.clip_value(np.array([np.nan])) == 1.0
    assert report.clip_value(np.zeros(3)) == 1.0


def test_word_level_tokens_are_joined_with_spaces() -> None:
    tok = build_tokenizer()
    ids = [np.array(tok.encode("the answer is 5"))]
    vocab, sep = report.token_texts(tok, ids)
    assert sep == " " and [vocab[str(i)] for i in ids[0]] == ["the", "answer", "is", "5"]
    assert report.token_texts(None, ids) == ({}, " ")


def test_embedded_json_cannot_close_the_script() -> None:
    text = report.script_json({"p": ["</script><script>alert(1)</script>", "<!--"]})
    assert "<" not in text and json.loads(text)["p"][1] == "<!--"


def test_cli_writes_a_self_contained_file(tmp_path: Path, capsys) -> None:
    run = write_run(tmp_path / "run", random_rows(2, 4))
    assert report.main(argparse.Namespace(output_dir=str(run), out=None)) == 0
    page = (run / "report.html").read_text()
    assert "wrote" in capsys.readouterr().out
    assert "{{" not in page and "http://" not in page and "https://" not in page
    assert 'id="trace-data"' in page and "<svg" in page
    data = json.loads(page.split('id="trace-data">')[1].split("</script>")[0])
    assert len(data["responses"]) == 8 and data["vocab"] == {}  # no tokenizer at /nonexistent: ids shown


def test_validation_section_only_when_the_run_validated(tmp_path: Path) -> None:
    from tests.report.runs import write_validation

    run = write_run(tmp_path / "run", random_rows(2, 4))
    assert "svg class=\"scatter\"" not in (report.build_report(run)).read_text()
    write_validation(run, subsets=7, lds=0.5)
    page = report.build_report(run).read_text()
    assert page.count("<circle") == 7 and "LDS 0.500" in page
    assert "top 1% removed" in page and "every token kept" in page


def test_responses_come_first_with_prompt_text_and_the_random_model_is_named(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """The page opens on the metrics and the responses; figures, timings and the folded configuration
    follow. Prompt texts come from the rollouts file; a random model is said to be one."""
    from influence_trace.io.outputs import load_summary, write_summary

    run = write_run(tmp_path / "run", random_rows(2, 2), model_path=str(tiny_model_dir))
    rollouts = tmp_path / "rollouts.jsonl"
    rollouts.write_text("".join(json.dumps({"prompt_id": f"p{p}", "response_id": f"p{p}-r{r}",
                                            "prompt": f"what is {p} plus {p}", "response": "four",
                                            "reward": float(r == 0)}) + "\n"
                                for p in range(2) for r in range(2)))
    summary = load_summary(run)
    summary["config"]["rollouts"]["path"] = str(rollouts)
    summary["resources"] = {"peak_gpu_bytes": 0, "peak_host_bytes": 2_000_000_000, "device": "cpu"}
    write_summary(run, summary)
    page = report.build_report(run).read_text()
    order = [page.index(h) for h in ("Quality metrics", "<h2>Responses", "Timing and resources",
                                     "<h2>Configuration")]
    assert order == sorted(order)
    assert "<details><summary>The manifest&#x27;s settings</summary>" in page
    assert "has random weights" in page and "GPU mem" not in page
    data = json.loads(page.split('id="trace-data">')[1].split("</script>")[0])
    assert data["prompt_texts"] == ["what is 0 plus 0", "what is 1 plus 1"]
    assert "#b2182b" not in page.split("<h2>Scores")[1].split("<h2>")[0]  # red is never a side
