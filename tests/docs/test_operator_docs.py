"""The operator's docs say what the chart and the CRD really do: every printer column in
docs/operator.md's table, in order, and every single-valued chart default in docs/install.md."""

from __future__ import annotations

import re

import yaml

from tests.docs import blocks

_COLUMN_ROW = re.compile(r"^\| ([A-Z-]+) \| `([^`]+)` \|", re.M)
_VALUE_ROW = re.compile(r"^\| `([a-zA-Z.]+)` \| `([^`]*)` \|", re.M)


def test_the_printer_column_table_is_the_crds() -> None:
    text = (blocks.REPO / "docs" / "operator.md").read_text()
    table = text.split("<!-- printer-columns -->", 1)[1].split("\n\n", 1)[0]
    crd = yaml.safe_load((blocks.REPO / "crds" / "influencetraces.yaml").read_text())
    columns = crd["spec"]["versions"][0]["additionalPrinterColumns"]
    assert _COLUMN_ROW.findall(table) == [(c["name"].upper(), c["jsonPath"]) for c in columns]


def test_the_chart_defaults_in_install_md_are_the_charts() -> None:
    values = yaml.safe_load((blocks.REPO / "charts" / "influence-trace-operator" / "values.yaml").read_text())
    text = (blocks.REPO / "docs" / "install.md").read_text()
    table = text.split("| Value | Default |", 1)[1].split("\n\n", 1)[0]
    rows = _VALUE_ROW.findall(table)
    assert len(rows) >= 20, "the chart values table in docs/install.md changed shape"
    for key, documented in rows:
        value = values
        for part in key.split("."):
            value = value[part]
        assert yaml.safe_load(documented) == value, f"install.md: {key} is {documented}; chart: {value!r}"


def test_the_reasons_table_is_every_reason_the_operator_defines() -> None:
    """Every condition reason lives in conditions.py, and docs/operator.md lists each one once."""
    from influence_trace_operator import conditions

    strings = {v for k, v in vars(conditions).items() if k.isupper() and isinstance(v, str)}
    defined = strings - set(conditions.TYPES)
    text = (blocks.REPO / "docs" / "operator.md").read_text()
    table = text.split("<!-- reasons -->", 1)[1].split("\n\n", 1)[0]
    listed = re.findall(r"^\| `(\w+)` \|", table, re.M)
    assert sorted(listed) == sorted(defined) and len(listed) == len(set(listed))
    package = blocks.REPO / "operator" / "influence_trace_operator"
    elsewhere = [p.name for p in package.glob("*.py") if p.name != "conditions.py"
                 and re.search(r'^[A-Z_]+ = "(' + "|".join(defined) + ')"', p.read_text(), re.M)]
    assert elsewhere == [], f"reasons defined outside conditions.py: {elsewhere}"
