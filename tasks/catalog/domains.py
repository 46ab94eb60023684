"""The catalog's label vocabulary as configuration: which label values make the two image domains.

The style models translate domain X into domain Y (the CycleGAN: lifestyle shots into studio
shots), and the GAN learns domain Y (the clean product shots). Which label column and which values
those are is a catalog's own vocabulary, not code: `CE_DOMAINS` (JSON, `Settings.domains`), e.g.
`{"column": "style", "x": ["model shot", "flat lay"], "y": ["packshot"]}`, and `CE_GAN_FILTERS`
for the GAN's training images when they are not domain Y. The defaults are the sample catalog's
(`style`: lifestyle -> studio). Training turns them into the models' label filters
(`tasks.train.config.label_overrides`), so the filters a version used are in its config and hash.
"""

from __future__ import annotations

import pydantic

# Characters of the filter syntax (`column=a|b,other=c`, `tasks.catalog.labels.LabelFilter`).
_SYNTAX = ("=", "|", ",")


def _plain(text: str, what: str) -> str:
    text = text.strip()
    if not text:
        raise ValueError(f"{what} is empty")
    bad = [c for c in _SYNTAX if c in text]
    if bad:
        raise ValueError(f"{what} {text!r} contains {' '.join(repr(c) for c in bad)}, which label filters cannot hold")
    return text


class LabelDomains(pydantic.BaseModel):
    """Two disjoint sets of values of one label column (`category`, `style` or any `label_<name>`)."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    column: str = "style"
    x: tuple[str, ...] = ("lifestyle",)  # the domain the style transform starts from
    y: tuple[str, ...] = ("studio",)  # the domain it produces; the GAN's images by default

    @pydantic.field_validator("column")
    @classmethod
    def _column(cls, value: str) -> str:
        return _plain(value, "the domains' label column")

    @pydantic.field_validator("x", "y")
    @classmethod
    def _values(cls, values: tuple[str, ...], info: pydantic.ValidationInfo) -> tuple[str, ...]:
        if not values:
            raise ValueError(f"domain {info.field_name} names no label value")
        return tuple(_plain(v, f"a domain {info.field_name} value") for v in values)

    @pydantic.model_validator(mode="after")
    def _disjoint(self) -> "LabelDomains":
        shared = sorted(set(self.x) & set(self.y))
        if shared:
            raise ValueError(f"domains x and y share the value(s) {', '.join(map(repr, shared))}")
        return self

    @property
    def x_filter(self) -> str:
        return f"{self.column}={'|'.join(self.x)}"

    @property
    def y_filter(self) -> str:
        return f"{self.column}={'|'.join(self.y)}"


def check_filters(text: str | None) -> str | None:
    """`CE_GAN_FILTERS`: None (follow domain Y), "" (every image) or `column=a|b[,column=c]`."""
    if text is None or not text.strip():
        return None if text is None else ""
    for item in text.split(","):
        column, sep, values = item.partition("=")
        if not sep or not column.strip() or not any(v.strip() for v in values.split("|")):
            raise ValueError(f"bad label filter {item.strip()!r}: expected 'column=value' or 'column=a|b'")
    return text.strip()
