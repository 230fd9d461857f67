"""The operator's docs say what the chart, the CRD and the settings really do: every printer column
and every condition reason in docs/operator.md's tables, every setting named there, and every chart
value in docs/install.md's Values table with its default (where it is a single value)."""

from __future__ import annotations

import re

import yaml

from tests.docs import blocks

_COLUMN_ROW = re.compile(r"^\| ([A-Z-]+) \| `([^`]+)` \|", re.M)
_VALUE_ROW = re.compile(r"^\| `([a-zA-Z.]+)` \| `([^`]*)` \|", re.M)


def chart_values() -> dict:
    return yaml.safe_load((blocks.REPO / "charts" / "influence-trace-operator" / "values.yaml").read_text())


def install_md() -> str:
    return (blocks.REPO / "docs" / "install.md").read_text()


def test_the_printer_column_table_is_the_crds() -> None:
    text = (blocks.REPO / "docs" / "operator.md").read_text()
    table = text.split("<!-- printer-columns -->", 1)[1].split("\n\n", 1)[0]
    crd = yaml.safe_load((blocks.REPO / "crds" / "influencetraces.yaml").read_text())
    columns = crd["spec"]["versions"][0]["additionalPrinterColumns"]
    assert _COLUMN_ROW.findall(table) == [(c["name"].upper(), c["jsonPath"]) for c in columns]


def test_the_chart_defaults_in_install_md_are_the_charts() -> None:
    values = chart_values()
    table = install_md().split("| Value | Default |", 1)[1].split("\n\n", 1)[0]
    rows = _VALUE_ROW.findall(table)
    assert len(rows) >= 20, "the chart values table in docs/install.md changed shape"
    for key, documented in rows:
        value = values
        for part in key.split("."):
            value = value[part]
        assert yaml.safe_load(documented) == value, f"install.md: {key} is {documented}; chart: {value!r}"


def test_the_reasons_table_is_every_reason_the_operator_defines() -> None:
    """Every condition reason lives in conditions.py, and docs/operator.md lists each one once."""
    from influence_trace_operator.rules import conditions

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


def test_install_values_table_names_every_value() -> None:
    """Each value of the chart's values.yaml (two levels deep) has a row in docs/install.md's table."""
    values = chart_values()
    rows = [line.split(" | ")[0] for line in install_md().splitlines() if line.startswith("| `")]
    missing = []
    for key, value in values.items():
        names = [f"{key}.{sub}" for sub in value] if isinstance(value, dict) and key != "pools" else [key]
        for name in names:
            parent, _, leaf = name.rpartition(".")
            if not any(f"`{name}" in row or (f"`{parent}." in row and f"`.{leaf}`" in row) for row in rows):
                missing.append(name)
    assert not missing, f"docs/install.md's Values table lacks {missing}"


def test_operator_doc_names_every_setting() -> None:
    """Each operator setting (an INFLUENCETRACE_* variable) is named in docs/operator.md."""
    from influence_trace_operator.rules.settings import OperatorSettings

    text = (blocks.REPO / "docs" / "operator.md").read_text()
    missing = [name.upper() for name in OperatorSettings.model_fields
               if f"`{name.upper()}`" not in text and f"INFLUENCETRACE_{name.upper()}`" not in text
               and f"INFLUENCETRACE_{name.upper()}=" not in text]
    assert not missing, f"docs/operator.md does not name the settings {missing}"
