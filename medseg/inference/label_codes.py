"""User-given DICOM segment codes of a run: ``RUN/labels.json`` ``"codes": {"<label value>": {"value", "scheme",
"meaning", "category"?}}`` (kept when training resumes; copied into export bundles)."""

from __future__ import annotations

from pathlib import Path


def label_codes(run_dir: str | Path) -> dict:
    """The codes by label value, or ``{}``."""
    path = Path(run_dir) / "labels.json"
    if not path.is_file():
        return {}
    from medseg.io.json_file import read_json_object

    codes = read_json_object(path).get("codes")
    return {str(k): v for k, v in codes.items() if isinstance(v, dict) and "value" in v} if isinstance(codes, dict) else {}
