"""mtst calls no private API of the libraries it runs on: their private names change without notice
(transformers 5.24 changed ``BertModel._create_attention_masks`` and every cached-prefix run crashed)."""

from __future__ import annotations

import ast
from pathlib import Path

import mtst

ROOT = Path(mtst.__file__).parent
GUARDED = {
    # name: why it may be read (never called directly), with the fallback that is tested
    "_is_avx512_bf16_supported": "torch.cpu's probe, read with getattr and a False default (precision auto)",
    "_is_amx_tile_supported": "torch.cpu's probe, read with getattr and a False default (precision auto)",
}


def _modules() -> dict[str, ast.Module]:
    return {str(p.relative_to(ROOT)): ast.parse(p.read_text(encoding="utf-8")) for p in ROOT.rglob("*.py")}


def _own_private_names(trees: dict[str, ast.Module]) -> set[str]:
    """Private names mtst defines itself (its own functions, methods and attributes)."""
    names: set[str] = set()
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
    return {n for n in names if n.startswith("_")}


def private_calls(source: str, own: set[str]) -> list[str]:
    """``x._name(...)`` and ``x._name`` reads where ``_name`` is not mtst's own (dunders aside), and
    private names in strings handed to getattr/hasattr."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
            name = node.attr
            if name.startswith("_") and not name.startswith("__") and name not in own:
                found.append(f"line {node.lineno}: {ast.unparse(node)}")
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "hasattr")
            and len(node.args) > 1
            and isinstance(node.args[1], ast.Constant)
        ):
            name = node.args[1].value
            if isinstance(name, str) and name.startswith("_") and not name.startswith("__") and name not in own:
                found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return sorted(found, key=lambda line: int(line.split(":")[0].removeprefix("line ")))


def test_the_scan_finds_private_calls_into_a_library() -> None:
    code = (
        "from accelerate.state import AcceleratorState\n"
        "AcceleratorState._reset_state()\n"
        "mask, _ = backbone._create_attention_masks(attention_mask=m)\n"
        "hasattr(backbone, '_create_attention_masks')\n"
        "self._own()\n"
    )
    found = private_calls(code, {"_own"})
    assert len(found) == 3, found
    assert "AcceleratorState._reset_state" in found[0] and "_create_attention_masks" in found[1]


def test_no_module_uses_a_private_name_of_another_library() -> None:
    trees = _modules()
    own = _own_private_names(trees) | set(GUARDED)
    bad = {
        module: calls for module in trees if (calls := private_calls((ROOT / module).read_text(encoding="utf-8"), own))
    }
    assert not bad, bad
