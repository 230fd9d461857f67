"""``influence-trace estimate`` as a user runs it: JSON, the table, and its exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "qwen15b-f32-all-selected.yaml"


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "influence_trace.cli", "estimate", *args],
                          capture_output=True, text=True)


def test_json_output() -> None:
    out = cli(str(EXAMPLE), "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["pool"] == "h100" and data["reason"].startswith("fits h100")
    assert data["gpuBytes"] > 0 and data["hostBytes"] > 0
    assert {"gpu", "host", "stages"} <= set(data["breakdown"])
    assert len(data["modules"]) == 196
    assert data["modules"][4] == {"name": "model.layers.0.mlp.gate_proj", "kIn": 48, "kOut": 280,
                                  "D": 13440, "hessianBytes": 13440**2 * 4}


def test_table_and_refusal(tmp_path: Path) -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    data["spec"]["trace"]["factor"] = 4
    path = tmp_path / "f4.yaml"
    path.write_text(yaml.safe_dump(data))
    out = cli(str(path))
    assert out.returncode == 3
    assert "pool: none" in out.stdout and "trace.factor" in out.stdout


def test_invalid_manifest_names_the_field(tmp_path: Path) -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    data["spec"]["trace"]["factor"] = 0
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    out = cli(str(path))
    assert out.returncode == 65 and "spec.trace.factor" in out.stderr


def test_no_tokens_to_estimate_from(tmp_path: Path) -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    del data["spec"]["rollouts"]["tokensEstimate"]
    path = tmp_path / "none.yaml"
    path.write_text(yaml.safe_dump(data))
    out = cli(str(path))
    assert out.returncode == 65 and "tokensEstimate" in out.stderr


def test_bad_pools_file(tmp_path: Path) -> None:
    pools = tmp_path / "pools.yaml"
    pools.write_text("pools:\n  - name: x\n")
    out = cli(str(EXAMPLE), "--pools", str(pools))
    assert out.returncode == 78 and str(pools) in out.stderr and "gpuMemoryBytes" in out.stderr


def test_several_manifests(tmp_path: Path) -> None:
    examples = sorted(EXAMPLE.parent.glob("*.yaml"))
    out = cli(*map(str, examples), "--json")
    assert out.returncode == 0, out.stderr
    answers = json.loads(out.stdout)
    assert [a["manifest"] for a in answers] == [str(p) for p in examples]
    assert all(a["pool"] == "h100" for a in answers)
    table = cli(*map(str, examples))
    assert table.stdout.count("== ") == len(examples) and table.stdout.count("pool: h100") == len(examples)
    data = yaml.safe_load(EXAMPLE.read_text())
    data["spec"]["trace"]["factor"] = 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    mixed = cli(str(EXAMPLE), str(bad))
    assert mixed.returncode == 65 and "pool: h100" in mixed.stdout and "spec.trace.factor" in mixed.stderr


def test_a_file_of_several_documents_is_estimated_document_by_document(tmp_path: Path) -> None:
    """kubectl accepts documents separated by ---; so does estimate (each labelled FILE#N), while
    `run` refuses such a file by name (it runs one trace)."""
    first = yaml.safe_load(EXAMPLE.read_text())
    second = yaml.safe_load(EXAMPLE.read_text())
    second["spec"]["trace"]["factor"] = 1  # no pool fits factor 1 for a 1.5B model
    both = tmp_path / "both.yaml"
    both.write_text(yaml.safe_dump_all([first, second]))
    out = cli(str(both), "--json")
    answers = json.loads(out.stdout)
    assert [a["manifest"] for a in answers] == [f"{both}#1", f"{both}#2"]
    assert [a["pool"] for a in answers] == ["h100", None] and out.returncode == 3
    from influence_trace.api.spec import ManifestError, load_manifest

    with pytest.raises(ManifestError, match="holds 2 documents"):
        load_manifest(both)


def test_a_reader_that_goes_away_gets_no_traceback() -> None:
    """`influence-trace estimate ... | head -1`: exit 141 (SIGPIPE's), nothing on stderr."""
    many = [str(EXAMPLE)] * 60  # about 150 kB of tables: more than the pipe holds, so writes meet the close
    proc = subprocess.Popen([sys.executable, "-m", "influence_trace.cli", "estimate", *many],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().startswith(b"==")
    proc.stdout.close()  # the reader leaves after one line
    err = proc.stderr.read() if proc.stderr else b""
    assert proc.wait(timeout=60) == 141 and err == b"", err.decode()


def test_the_table_shows_stages_apart_and_help_lists_exit_codes() -> None:
    table = cli(str(EXAMPLE)).stdout
    assert "stages (one at a time; the largest is the peak)" in table and "<- peak" in table
    assert "not a sum" in table
    helped = subprocess.run([sys.executable, "-m", "influence_trace.cli", "estimate", "--help"],
                            capture_output=True, text=True).stdout
    assert all(f" {code} " in helped for code in (0, 3, 65, 78, 141)), helped
