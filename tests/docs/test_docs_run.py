"""Every block a reader copies from the docs is run, or checked where it cannot run here.

The markers are described in tests/docs/blocks.py. Blocks marked ``cluster`` run in
tests/cluster/test_docs_cluster.py; this file runs and checks the rest, doc by doc, in order, in a
sandbox that looks like the repository.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest
import yaml

from tests.docs import blocks

DOCS = blocks.docs()


def _env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def test_every_block_says_what_it_is() -> None:
    problems = []
    for doc in DOCS:
        for block in blocks.parse(doc):
            if block.kind is not None and block.kind not in blocks.KINDS:
                problems.append(f"{block.where}: unknown marker kind {block.kind!r}")
            elif block.kind in {"skip", "check", "file", "excerpt", "generated"} and not block.arg:
                problems.append(f"{block.where}: `{block.kind}` needs an argument (a reason, a path)")
            elif not block.lang and block.kind is None:
                problems.append(f"{block.where}: say what the block is (```sh, ```yaml, ```text, ...)")
            elif block.kind == "generated":
                script = blocks.REPO / block.arg.split()[0]
                if not script.is_file():
                    problems.append(f"{block.where}: {script} (which writes this block) does not exist")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(blocks.REPO)))
def test_doc_blocks_run(doc: Path, tmp_path: Path) -> None:
    root = blocks.sandbox(tmp_path)
    for block in blocks.parse(doc):
        if block.kind in {"output", "skip", "cluster", "generated"}:
            continue
        if block.kind == "file":
            _write_file(block, root)
        elif block.kind == "excerpt":
            _check_excerpt(block)
        elif block.kind == "check":
            _check_block(block, root)
        elif block.shell:
            blocks.run_bash(block.text, root, _env())
        elif block.lang == "json":
            json.loads(block.text)
        elif block.lang == "yaml":
            documents = list(yaml.safe_load_all(block.text))
            assert documents and None not in documents, f"{block.where}: an empty YAML document"


def _write_file(block: blocks.Block, root: Path) -> None:
    from influence_trace.api.spec import load_manifest

    path = root / block.arg
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(block.text)
    if (yaml.safe_load(block.text) or {}).get("kind") == "InfluenceTrace":
        load_manifest(path)


def _check_excerpt(block: blocks.Block) -> None:
    excerpt = yaml.safe_load(block.text)
    whole = yaml.safe_load((blocks.REPO / block.arg).read_text())
    for key, value in excerpt.items():
        assert whole.get(key) == value, f"{block.where}: `{key}` differs from {block.arg}"


def _check_block(block: blocks.Block, root: Path) -> None:
    reason, absent = blocks.check_args(block.arg)
    assert reason, f"{block.where}: say why the block cannot run"
    missed: list[str] = []
    for words in blocks.commands(block.text):
        try:
            missed += blocks.check_command(words, root, absent)
        except AssertionError as err:
            raise AssertionError(f"{block.where}: {err}") from err
    assert set(missed) == absent, f"{block.where}: `absent:` lists {sorted(absent - set(missed))} unused"


def test_each_example_says_what_it_needs_in_the_namespace() -> None:
    examples = sorted((blocks.REPO / "examples").glob("*.yaml"))
    assert examples
    for path in examples:
        text = path.read_text()
        header = text[: text.index("apiVersion:")]
        spec = yaml.safe_load(text)["spec"]
        for needed in (spec["storage"]["volumeClaim"], spec["model"]["path"], spec["rollouts"]["path"],
                       spec["output"]["path"]):
            assert needed in header, f"{path.name}: the header comment does not name {needed}"


def test_examples_are_estimated_together() -> None:
    examples = sorted(str(p) for p in (blocks.REPO / "examples").glob("*.yaml"))
    proc = blocks.run_cli(["estimate", *examples], blocks.REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("pool: h") == len(examples)


_PATH = re.compile(r"`((?:worker|operator|tests|bench|hack|scripts|charts|crds|examples|docs)/[\w./-]*\w/?)`")
_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_paths_named_in_docs_exist() -> None:
    """Repository paths in backticks (from the root) and relative links (from the doc) exist."""
    missing = []
    for doc in DOCS:
        text = doc.read_text()
        for path in _PATH.findall(text):
            if not (blocks.REPO / path).exists():
                missing.append(f"{doc.relative_to(blocks.REPO)}: `{path}`")
        for link in _LINK.findall(text):
            if "://" not in link and not (doc.parent / link).exists():
                missing.append(f"{doc.relative_to(blocks.REPO)}: link {link}")
    assert not missing, "\n".join(missing)


def test_recorded_transcript_has_todays_columns() -> None:
    """The README's watch transcript shows the CRD's printer columns; a changed column means: rerun
    `hack/record_transcripts.py` (never edit the transcript by hand)."""
    from influence_trace.api import crd

    [block] = [b for b in blocks.parse(blocks.REPO / "README.md") if b.kind == "generated"]
    lines = block.text.splitlines()
    assert lines[0] == "$ kubectl get influencetraces -w"
    printer = crd.build_crd()["spec"]["versions"][0]["additionalPrinterColumns"]
    columns = [c["name"].upper() for c in printer if not c.get("priority")]  # priority 1: -o wide only
    assert lines[1].split() == ["NAME", *columns], f"{block.where}: rerun hack/record_transcripts.py"
    assert "Events:" in block.text and "Succeeded" in block.text
