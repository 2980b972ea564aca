"""Browser tests: the status page in real headless Chromium (Debian's /usr/bin/chromium, installed by
.ci/install-browser), driven over the Chrome DevTools Protocol by `harness`.

To run these page tests against a real `fleet serve` instead of `statusserver`, use the `browser`
fixture from conftest.py and `page.goto(<serve URL>)`; the page's only input is `GET /api/v1/status`.
"""
