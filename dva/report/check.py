"""Whether a written report is whole: every image, video and link its page references exists where it points.

Useful after copying a report folder elsewhere, and what the tests check besides rendering it in a browser.
"""

from __future__ import annotations

import posixpath
from html.parser import HTMLParser
from urllib.parse import unquote, urlparse

from dva.storage import exists, is_remote, open_file

REFERENCE_ATTRIBUTES = {"src", "href", "poster"}


class _References(HTMLParser):
    def __init__(self):
        super().__init__()
        self.found: list[tuple[str, str, str]] = []  # (tag, attribute, reference)

    def handle_starttag(self, tag, attrs):
        self.found += [(tag, name, value) for name, value in attrs if name in REFERENCE_ATTRIBUTES and value]


def references(page: str) -> list[tuple[str, str, str]]:
    """(tag, attribute, reference) of every src/href/poster attribute in an HTML page, in order."""
    parser = _References()
    parser.feed(page)
    parser.close()
    return parser.found


def resolve(index_uri: str, reference: str) -> str | None:
    """The file a reference in `index_uri` points at, or None for references that are not files (data:, #anchors,
    web links)."""
    parsed = urlparse(reference)
    if reference.startswith("#") or parsed.scheme in ("data", "http", "https", "mailto"):
        return None
    if parsed.scheme:  # an absolute URI such as s3://bucket/key or file:///path
        return reference
    folder = posixpath.dirname(index_uri)
    path = unquote(parsed.path)
    if is_remote(index_uri):
        scheme, _, rest = folder.partition("://")
        return f"{scheme}://{posixpath.normpath(posixpath.join(rest, path))}"
    return posixpath.normpath(posixpath.join(folder, path))


def missing_references(index_uri: str) -> list[str]:
    """The references of the page at `index_uri` (local or s3://) whose files do not exist; [] for a whole report."""
    with open_file(index_uri) as f:
        page = f.read().decode()
    targets = [(ref, resolve(index_uri, ref)) for _, _, ref in references(page)]
    return [ref for ref, target in targets if target is not None and not exists(target)]
