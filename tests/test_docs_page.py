"""The API's docs page (``/schema``) is served with no CDN: every script, stylesheet and icon it names is
the gateway's own (Redoc's script from the package), and its Content-Security-Policy lets the browser load
nothing from elsewhere."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

from litestar.testing import AsyncTestClient

STATIC = Path(__file__).resolve().parent.parent / "gateway" / "http" / "static"


class Links(HTMLParser):
    """Every URL an element of the page would load or link to."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href", "data", "action") and value]


async def test_the_docs_page_loads_nothing_from_another_host(gateway: AsyncTestClient) -> None:  # type: ignore[type-arg]
    for path in ("/schema", "/schema/redoc"):
        page = await gateway.get(path)
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        links = Links()
        links.feed(page.text)
        assert "/static/redoc.standalone.js" in links.urls
        assert [url for url in links.urls if not url.startswith("/") or url.startswith("//")] == []
        assert "@import" not in page.text and "fonts.googleapis" not in page.text
        policy = page.headers["content-security-policy"]
        assert "default-src 'none'" in policy
        assert "http" not in policy and "*" not in policy  # no host allowed, only 'self'

    script = await gateway.get("/static/redoc.standalone.js")
    assert script.status_code == 200
    assert script.content == (STATIC / "redoc.standalone.js").read_bytes()
    assert b"e.Redoc=" in script.content[:1000]  # the global Redoc.init the page calls
    assert (STATIC / "redoc.standalone.js.LICENSE.txt").read_text().startswith("The MIT License")


async def test_the_document_itself_is_still_served(gateway: AsyncTestClient) -> None:  # type: ignore[type-arg]
    assert (await gateway.get("/schema/openapi.json")).json()["info"]["title"] == "Group Gateway"
    assert (await gateway.get("/schema/openapi.yaml")).text.startswith(("openapi:", "info:", "components:"))
    for cdn_page in ("/schema/swagger", "/schema/elements", "/schema/rapidoc"):
        assert (await gateway.get(cdn_page)).status_code == 404
