"""`fleet.controller.ui`: the shipped assets and the rendered index page (no browser needed)."""

from __future__ import annotations

import re

import pytest

from fleet.controller import ui
from fleet.core import errors


def test_the_assets_ship_in_the_package_with_their_content_types() -> None:
    assert b"window.fleetUi" in ui.asset("app.js")
    assert b"prefers-color-scheme: dark" in ui.asset("style.css")
    assert ui.content_type("app.js") == "text/javascript"
    assert ui.content_type("style.css") == "text/css"
    assert ui.CHARSET == "utf-8"
    ui.asset("app.js").decode(ui.CHARSET)
    ui.asset("style.css").decode(ui.CHARSET)


@pytest.mark.parametrize("name", ["index.html", "__init__.py", "../__init__.py", "", "APP.JS"])
def test_only_the_listed_assets_can_be_asked_for(name: str) -> None:
    with pytest.raises(KeyError):
        ui.asset(name)


def test_the_index_loads_versioned_assets_and_carries_no_inline_script() -> None:
    page = ui.render_index(jaeger_url=None).decode()
    scripts = re.findall(r"<script[^>]*>", page)
    assert scripts == [f'<script src="ui/app.js?v={ui._version("app.js")}" defer>']
    assert f'href="ui/style.css?v={ui._version("style.css")}"' in page
    assert '<meta name="fleet-poll-interval-ms" content="2000">' in page
    assert "fleet-jaeger-url" not in page
    assert "<!--fleet:config-->" not in page


def test_a_jaeger_url_is_normalised_and_escaped_into_the_page() -> None:
    page = ui.render_index(jaeger_url="https://jaeger.example.com/ui/", poll_interval=0.5).decode()
    assert '<meta name="fleet-jaeger-url" content="https://jaeger.example.com/ui">' in page
    assert '<meta name="fleet-poll-interval-ms" content="500">' in page
    quoted = ui.render_index(jaeger_url='http://j.example/a"b<c').decode()
    assert 'content="http://j.example/a&quot;b&lt;c"' in quoted


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("javascript:alert(1)", "absolute http"),
        ("jaeger:16686", "absolute http"),
        ("/trace", "absolute http"),
        ("http://user:pw@jaeger.example", "credentials"),
        ("http://jaeger.example/?token=pw", "query or fragment"),
        ("pw:secret@jaeger", "absolute http"),
    ],
)
def test_a_jaeger_url_that_is_not_a_plain_http_url_is_refused(url: str, complaint: str) -> None:
    with pytest.raises(errors.InputError, match=complaint) as info:
        ui.render_index(jaeger_url=url)
    assert "pw" not in str(info.value)
    assert "secret" not in str(info.value)


def test_a_poll_interval_out_of_range_is_refused() -> None:
    with pytest.raises(errors.InputError, match="poll interval"):
        ui.render_index(jaeger_url=None, poll_interval=0)
