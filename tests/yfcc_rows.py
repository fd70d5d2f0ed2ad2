"""Hand-built YFCC metadata lines for tests, encoded the way the real dump is."""
import hashlib
from urllib.parse import quote_plus

from pipeline.yfcc import COLUMNS_23, COLUMNS_25


def fields(photo_id=1001, user_id="111@N01", tags=("dog", "beach"), machine_tags=(), title="A title",
           video=False, **overrides) -> dict:
    """The raw (already URL-encoded) field values of one valid photo row, by column name."""
    row = {
        "line_number": "0", "photo_id": str(photo_id), "hash": hashlib.md5(str(photo_id).encode()).hexdigest(),
        "user_id": user_id, "user_nickname": quote_plus("Jane Doe"),
        "date_taken": "2012-08-18 19:35:14.0", "date_uploaded": "1345338994",
        "capture_device": quote_plus("Canon EOS 400D Digital"), "title": quote_plus(title),
        "description": quote_plus("Seen at the beach & the pier"),
        "user_tags": ",".join(quote_plus(t) for t in tags),
        "machine_tags": ",".join(quote_plus(t) for t in machine_tags),
        "longitude": "2.351", "latitude": "48.857", "accuracy": "16",
        "page_url": f"http://www.flickr.com/photos/{user_id}/{photo_id}/",
        "download_url": f"http://farm3.staticflickr.com/2/{photo_id}_abc.jpg",
        "license_name": quote_plus("Attribution License"), "license_url": "http://creativecommons.org/licenses/by/2.0/",
        "server_id": "2", "farm_id": "3", "secret": "abc", "secret_original": "def",
        "extension_original": "jpg", "marker": "1" if video else "0",
    }
    row.update(overrides)
    return row


def line(layout: int = 25, **kwargs) -> str:
    """One tab-separated line of the given layout (23 or 25)."""
    row = fields(**kwargs)
    return "\t".join(row[c] for c in (COLUMNS_25 if layout == 25 else COLUMNS_23))
