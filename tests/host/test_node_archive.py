"""The registry's node archive, unpacked into ComfyUI under another folder name than the project's, as
a user's clone or a manager install may be: the nodes load, the widget script is served once (not
once per registration), and the help pages, English texts, templates and example input are found."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from devtools.api_client import ComfyClient
from devtools.comfy_host import running_server
from devtools.node_archive import REPO_ROOT, write_archive

pytestmark = pytest.mark.host
FOLDER = "ComfyUI-P3S-Diffusion"  # not the project name (comfyui-p3s)


def test_the_archive_loads_under_another_folder_name_with_its_widget_once(tmp_path: Path):
    archive = tmp_path / "node.zip"
    write_archive(archive)
    base = tmp_path / "base"
    with zipfile.ZipFile(archive) as files:
        files.extractall(base / "custom_nodes" / FOLDER)
    with running_server(base, link_pack=False) as server:
        client = ComfyClient(server.url)
        assert client.object_info()["P3SPoints"]["python_module"] == f"custom_nodes.{FOLDER}"
        scripts = [path for path in client.get_json("/extensions") if path.endswith("/p3s_points.js")]
        assert scripts == [f"/extensions/{FOLDER}/p3s_points.js"], "the widget registers once"
        # Where the frontend's node help panel looks for a custom node's page.
        page = client.get_bytes(f"/extensions/{FOLDER}/docs/P3SPoints.md").decode()
        assert page == (REPO_ROOT / "web" / "docs" / "P3SPoints.md").read_text()
        assert client.get_json("/i18n")["en"]["nodeDefs"]["P3SFineTune"]["display_name"] == "P3S Fine-tune"
        assert FOLDER in client.get_json("/workflow_templates")
        assert (base / "input" / "p3s_twins.png").is_file(), "the example input is in place"
