"""The docs checker itself: markers are read, commands split as a shell would, bad commands refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.docs import blocks

DOC = """# T

<!-- docs-test: check: needs a GPU; absent: out -->

```sh
influence-trace report out   # made by the run
X=1 influence-trace estimate \\
  a.yaml --json
```

```text
$ not run
```
"""


def test_markers_and_commands(tmp_path: Path) -> None:
    doc = tmp_path / "t.md"
    doc.write_text(DOC)
    first, second = blocks.parse(doc)
    assert (first.kind, first.lang, first.line) == ("check", "sh", 5)
    assert blocks.check_args(first.arg) == ("needs a GPU", {"out"})
    assert blocks.commands(first.text) == [["influence-trace", "report", "out"],
                                           ["influence-trace", "estimate", "a.yaml", "--json"]]
    assert (second.kind, second.lang) == (None, "text")


def test_check_refuses_what_would_fail(tmp_path: Path) -> None:
    example = str(blocks.REPO / "examples" / "qwen15b-f32-all-selected.yaml")
    assert blocks.check_command(["influence-trace", "estimate", example], tmp_path, set()) == []
    with pytest.raises(AssertionError, match="refused by the parser"):
        blocks.check_command(["influence-trace", "estimate", example, "--no-such-flag"], tmp_path, set())
    with pytest.raises(AssertionError, match=r"missing\.yaml does not exist"):
        blocks.check_command(["influence-trace", "run", "missing.yaml"], tmp_path, set())
    assert blocks.check_command(["influence-trace", "report", "out"], tmp_path, {"out"}) == ["out"]
    with pytest.raises(AssertionError, match="cannot check"):
        blocks.check_command(["kubectl", "get", "pods"], tmp_path, set())
    with pytest.raises(AssertionError, match="no stage gpu"):
        blocks.check_command(["docker", "build", "--target", "gpu", str(blocks.REPO)], tmp_path, set())
