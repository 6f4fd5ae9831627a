"""The jobs page pages through all of a key's jobs (older and newer links), over real HTTP and both databases."""

from __future__ import annotations

import html
import re

import pytest
from fastapi.testclient import TestClient

from service.ui import service as ui_service
from tests.service.conftest import submit


def _ids(page: str) -> list[str]:
    return re.findall(r"<tr><td><code>([^<]+)</code>", page)


def _link(page: str, rel: str) -> str | None:
    found = re.search(rf'<a rel="{rel}" href="([^"]+)"', page)
    return html.unescape(found.group(1)) if found else None


def _walk(client: TestClient, start: str, rel: str) -> list[list[str]]:
    pages, url = [], start
    while url is not None:
        r = client.get(url)
        assert r.status_code == 200, r.text
        pages.append(_ids(r.text))
        url = _link(r.text, rel)
        assert len(pages) < 10, "the links go round in circles"
    return pages


def test_older_and_newer_links_reach_every_job_once(
    client: TestClient, bob: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ui_service, "PAGE_SIZE", 4)
    newest_first = [submit(client)["id"] for _ in range(10)][::-1]
    older = _walk(client, "/ui", "next")
    assert older == [newest_first[0:4], newest_first[4:8], newest_first[8:]]

    last = client.get("/ui").text
    for _ in range(2):
        last = client.get(_link(last, "next") or "").text
    assert _link(last, "next") is None and _link(last, "first") == "/ui"
    assert _walk(client, _link(last, "prev") or "", "prev") == [newest_first[4:8], newest_first[0:4]]

    first = client.get("/ui").text
    assert _link(first, "prev") is None and _link(first, "first") is None
    assert _ids(bob.get("/ui").text) == []  # another key's jobs never show


def test_a_bad_cursor_is_refused(client: TestClient) -> None:
    r = client.get("/ui", params={"before": "not-a-cursor"})
    assert r.status_code == 422 and "cursor" in r.text
