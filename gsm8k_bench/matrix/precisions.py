"""What a precision (fp16, fp8, fp4) means on one framework and one vendor's hardware.

matrix.yaml's `precisions.<name>.<framework>` gives each field a value, or one per vendor; `Precision.flags`
resolves them for a framework on a vendor (fp8 with SGLang on MI355X: `flags("sglang", "amd")`).  The
combination then picks online or checkpoint quantization (`types.Combination.quantization`), and
`frameworks/common.py` spells the result as server flags (`--dtype`, `--quantization`, `--kv-cache-dtype`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

# A field's value in matrix.yaml: one for every vendor, or vendor -> value.
FlagValue = str | Mapping[str, str]


@dataclass(frozen=True)
class PrecisionFlags:
    """What a precision means for one framework on one vendor's hardware."""

    dtype: str | None = None
    kv_cache_dtype: str | None = None
    online_quantization: str | None = None
    checkpoint_quantization: str | None = None


PRECISION_FIELDS = tuple(f.name for f in fields(PrecisionFlags))


def for_vendor(value: FlagValue | None, vendor: str) -> str | None:
    """A value given once for every vendor, or the vendor's own from a mapping vendor -> value."""
    return value.get(vendor) if isinstance(value, Mapping) else value


@dataclass(frozen=True)
class Precision:
    name: str
    description: str
    checkpoint_required: bool
    # framework -> field -> value, where value is a str or a mapping vendor -> str
    per_framework: Mapping[str, Mapping[str, FlagValue]]

    def flags(self, framework: str, vendor: str) -> PrecisionFlags:
        spec = self.per_framework.get(framework, {})
        return PrecisionFlags(**{name: for_vendor(spec.get(name), vendor) for name in PRECISION_FIELDS})
