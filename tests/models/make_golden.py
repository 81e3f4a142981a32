"""Regenerate ``golden.json`` for the golden-output tests of ``tests/models``.

Run from anywhere: ``python tests/models/make_golden.py``. It imports every
``test_*.py`` here, finds the ``BaseModelTest`` subclasses and stores, for each
(model, variant, spatial_dims), the output summary that ``test_golden_output``
checks. Regenerate only after an intended change of a network, and review the diff.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    # import the test modules the way pytest does here (tests/ has no __init__.py):
    # as the package "models", with tests/ on sys.path
    sys.path.insert(0, str(HERE.parent))
    base = importlib.import_module(f"{HERE.name}.base")
    for path in sorted(HERE.glob("test_*.py")):
        importlib.import_module(f"{HERE.name}.{path.stem}")

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    golden = {}
    for cls in subclasses(base.BaseModelTest):
        for dims in (2, 3):
            key = base.golden_key(cls.name, dims, cls.variant)
            if key in golden:
                raise SystemExit(f"two test classes share the golden key {key}: give one a 'variant'")
            golden[key] = base.golden_summary(cls.name, dims, cls.kwargs)
            print(key, golden[key]["mean"], golden[key]["std"])
    base.GOLDEN_PATH.write_text(json.dumps(dict(sorted(golden.items())), indent=1) + "\n")
    print(f"wrote {len(golden)} entries to {base.GOLDEN_PATH}")


if __name__ == "__main__":
    main()
