"""How Envoy serves console/ (edge/envoy.py), without a browser: a route per file with
its content type and security headers, the files read from the configured root, what the
renderer refuses, and what the CSP relies on (no inline script or style, no HTML from data)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edge import envoy
from edge.envoy import (
    CONSOLE_CONTENT_TYPES,
    CONSOLE_DIR,
    CONSOLE_HEADERS,
    console_files,
    descriptors,
    routes,
)
from services.kubernetes import IN_CLUSTER

FILES = console_files()


def console_routes(files_root: Path) -> dict[str, dict]:
    """path -> route, for the console's routes."""
    return {
        r["match"]["path"]: r
        for r in routes(descriptors(), files_root)
        if r["match"].get("path", "").startswith("/console")
    }


def test_every_file_is_served_with_its_type_and_headers_from_the_root() -> None:
    served = console_routes(IN_CLUSTER.files_root)
    expected = {"/console", "/console/", *(f"/console/{f.as_posix()}" for f in FILES)}
    assert set(served) == expected
    assert served["/console"]["redirect"] == {"path_redirect": "/console/"}
    assert served["/console/"]["direct_response"]["body"] == {"filename": "/app/console/index.html"}
    for file in FILES:
        route = served[f"/console/{file.as_posix()}"]
        assert route["direct_response"] == {"status": 200, "body": {"filename": f"/app/console/{file.as_posix()}"}}
        headers = {h["header"]["key"]: h["header"]["value"] for h in route["response_headers_to_add"]}
        assert headers == {"content-type": CONSOLE_CONTENT_TYPES[file.suffix], **CONSOLE_HEADERS}
        assert route["match"]["headers"] == [{"name": ":method", "string_match": {"safe_regex": {"regex": "GET|HEAD"}}}]


REFUSED = [("notes.txt", 10, "without a content type"), ("big.js", envoy.MAX_DIRECT_RESPONSE_BYTES + 1, "larger")]


@pytest.mark.parametrize(("name", "size", "refusal"), REFUSED)
def test_the_renderer_refuses_what_envoy_could_not_serve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, size: int, refusal: str
) -> None:
    (tmp_path / "index.html").write_text("<!doctype html>")
    (tmp_path / name).write_bytes(b"x" * size)
    monkeypatch.setattr(envoy, "CONSOLE_DIR", tmp_path)
    with pytest.raises(ValueError, match=refusal):
        console_files()


def test_the_pages_need_no_inline_script_or_style() -> None:
    """The CSP (default-src 'self') would block them: every script and style is a file."""
    html = (CONSOLE_DIR / "index.html").read_text()
    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html) == []
    for file in FILES:
        text = (CONSOLE_DIR / file).read_text()
        assert re.findall(r"style=|<style|javascript:|\bon[a-z]+=\"", text) == [], file
        assert "http://" not in text.replace("http://www.w3.org/2000/svg", "") and "https://" not in text, file


def test_no_page_parses_api_data_as_html() -> None:
    """Text from the API goes into text nodes (console/dom.js), never through the HTML parser."""
    for file in FILES:
        text = (CONSOLE_DIR / file).read_text()
        assert re.findall(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(|new Function", text) == [], (
            file
        )
