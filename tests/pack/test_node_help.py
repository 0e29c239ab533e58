"""Every node explains itself: a tooltip on every input, a help page, an English locale entry, and the
README's category."""

from __future__ import annotations

import json
import re

import pytest

from devtools.node_help import DOCS_DIR, LOCALE_FILE, REPO_ROOT, locale_text, node_schemas, slot_name


@pytest.fixture(scope="module")
def schemas():
    return node_schemas()


def test_every_input_of_every_node_has_a_tooltip(schemas):
    missing = [f"{s.node_id}.{item.id}" for s in schemas for item in s.inputs if not (item.tooltip or "").strip()]
    assert missing == []
    assert all(s.description and s.category.startswith("P3S/") for s in schemas)


def test_every_node_has_a_help_page_naming_its_inputs_and_outputs(schemas):
    for schema in schemas:
        page = DOCS_DIR / f"{schema.node_id}.md"
        assert page.is_file(), f"no help page {page.relative_to(REPO_ROOT)}"
        text = page.read_text()
        assert text.startswith(f"# {schema.display_name}\n")
        named = set(re.findall(r"`([A-Za-z_0-9]+)`", text))
        inputs = {item.id for item in schema.inputs}
        outputs = {slot_name(item) for item in schema.outputs}
        assert inputs | outputs <= named, f"{page.name} does not describe {sorted((inputs | outputs) - named)}"
        assert "[stated" in text or "[reconstructed]" in text, f"{page.name}: what is the paper's, what is ours?"
        for image in re.findall(r"\]\((images/[^)]+)\)", text):
            assert (DOCS_DIR / image).is_file(), f"{page.name} shows a missing picture {image}"


def test_the_english_locale_is_the_schemas_texts(schemas):
    assert LOCALE_FILE.read_text() == locale_text(schemas), "run python -m devtools.node_help"
    locale = json.loads(LOCALE_FILE.read_text())
    assert set(locale) == {s.node_id for s in schemas}
    fine_tune = locale["P3SFineTune"]
    assert fine_tune["inputs"]["epochs"]["tooltip"] and fine_tune["outputs"]["1"]["name"] == "loss_plot"


def test_the_readme_nodes_table_gives_each_node_its_category(schemas):
    rows = dict(re.findall(r"^\| \*\*(P3S [^*]+)\*\* \| (P3S/\w+) \|", (REPO_ROOT / "README.md").read_text(), re.M))
    assert rows == {s.display_name: s.category for s in schemas}
