"""Write the published JSON Schemas of the spec and the certificate to ``docs/schemas/``.

Run after changing :mod:`verify._spec` or :mod:`verify._report`
(``python docs/scripts/schemas.py``); a test fails while the published files are stale.
"""

from __future__ import annotations

import json
from pathlib import Path

import verify

HERE = Path(__file__).resolve().parents[1] / "schemas"


def main() -> None:
    """Write ``spec.schema.json`` and ``certificate.schema.json``."""
    HERE.mkdir(exist_ok=True)
    for name, schema in (
        ("spec.schema.json", verify.spec_schema()),
        ("certificate.schema.json", verify.certificate_schema()),
    ):
        (HERE / name).write_text(json.dumps(schema, indent=2, ensure_ascii=False) + "\n")
        print(f"wrote {HERE / name}")


if __name__ == "__main__":
    main()
