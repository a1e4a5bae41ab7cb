"""The quick run (``pytest -m "not slow and not network"``) must not build networks:
a test module that builds one marks it, where the test is."""

import ast
from pathlib import Path

import pytest

#: What builds a Keras network or imports TensorFlow.
_NETWORK_NAMES = {"AutoencoderEmbedder", "ContrastiveEmbedder", "PretrainedCNNEmbedder", "VAEEmbedder", "keras"}


def _marks_network(node):
    return any("network" in ast.unparse(decorator) for decorator in getattr(node, "decorator_list", []))


def _uses_networks(function):
    """Whether the body of ``function`` names what builds networks (its decorators only build estimators)."""
    return any(
        (isinstance(child, ast.Name) and child.id in _NETWORK_NAMES)
        or (isinstance(child, ast.Attribute) and child.attr in _NETWORK_NAMES)
        for statement in function.body
        for child in ast.walk(statement)
    )


@pytest.mark.parametrize("path", sorted(Path(__file__).parent.glob("test_*.py")), ids=lambda path: path.name)
def test_a_module_that_builds_networks_marks_its_tests(path):
    module = ast.parse(path.read_text(encoding="utf-8"))
    module_marked = any(
        isinstance(node, ast.Assign)
        and any(isinstance(target, ast.Name) and target.id == "pytestmark" for target in node.targets)
        and "network" in ast.unparse(node.value)
        for node in module.body
    )
    if module_marked:
        return
    fixtures_with_networks = {
        node.name
        for node in module.body
        if isinstance(node, ast.FunctionDef) and "fixture" in ast.unparse(node.decorator_list) and _uses_networks(node)
    }
    unmarked = [
        node.name
        for node in module.body
        if isinstance(node, ast.FunctionDef)
        and node.name.startswith("test_")
        and not _marks_network(node)
        and (_uses_networks(node) or fixtures_with_networks & {arg.arg for arg in node.args.args})
    ]
    assert not unmarked, f"{path.name}: mark these tests @pytest.mark.network (they build networks): {unmarked}"
