"""The image that cannot give pairs, and where its problem is recorded."""

from __future__ import annotations

QUARANTINE_STAGE = "pairs"


class UnpairableImage(ValueError):
    """A catalog image that cannot give pairs; `reason` is a QUARANTINE reason."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
