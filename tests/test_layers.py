"""The packages import only downward: a test that walks every import with ``ast``, including those
inside functions, and fails on an import from a higher layer (so there can be no import cycle)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "medseg"

#: lowest first; a module may import its own layer and those below it
LAYERS = (
    ("errors", "units", "logs", "__init__"),
    ("io", "runtime"),
    ("data",),
    ("models",),
    ("runfolder",),
    ("inference",),
    ("evaluation",),
    ("planning",),
    ("training",),
    ("serving",),
    ("cli", "__main__"),
)
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def _part(module: str) -> str | None:
    """The package (or top-level module) of ``medseg.<part>...``; ``None`` outside medseg."""
    bits = module.split(".")
    if bits[0] != "medseg":
        return None
    return bits[1] if len(bits) > 1 else "__init__"


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    here = ["medseg", *path.relative_to(PACKAGE).with_suffix("").parts]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = here[: len(here) - node.level] if here[-1] != "__init__" else here[: len(here) - node.level]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            out.append((node.lineno, module))
    return out


def edges() -> list[tuple[str, str, str]]:
    """``(importing part, imported part, "file:line")`` for every import between medseg's parts."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        me = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        for line, module in _imports(path):
            other = _part(module)
            if other is not None and other != me:
                found.append((me, other, f"{rel}:{line}"))
    return found


def test_every_part_has_a_layer():
    parts = {p.name if p.is_dir() else p.stem for p in PACKAGE.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
    assert parts <= set(LAYER), f"give these a layer in LAYERS: {sorted(parts - set(LAYER))}"


def test_no_import_reaches_up():
    upward = [f"{where}: {me} imports {other}" for me, other, where in edges() if LAYER[other] > LAYER[me]]
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)


def test_the_walker_sees_imports_inside_functions():
    # cli/train_cmd.py imports the training package only inside its command function
    nested = [w for me, other, w in edges() if (me, other) == ("cli", "training") and w.startswith("cli/train_cmd.py")]
    assert nested
    source = (PACKAGE / "cli" / "train_cmd.py").read_text().splitlines()
    assert any(source[int(w.split(":")[1]) - 1].startswith((" ", "\t")) for w in nested)
