"""Markers given by where a test lives, for the quick development run (README, "Test")."""

import pytest

# Tests that build Keras networks, or start the command, an example or a
# server in a new process (each new process imports TensorFlow: about 4 s).
_NETWORK_TEST_MODULES = {
    "test_autoencoder.py",
    "test_cli.py",
    "test_cli_serve.py",
    "test_contrastive.py",
    "test_docs.py",
    "test_examples.py",
    "test_pretrained.py",
    "test_serve_browser.py",
    "test_vae.py",
}
_NETWORK_ESTIMATORS = ("AutoencoderEmbedder(", "ContrastiveEmbedder(", "PretrainedCNNEmbedder(", "VAEEmbedder(")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if (
            item.path.name in _NETWORK_TEST_MODULES
            or "embedders" in item.path.parts  # the embedders' docstring examples
            or any(name in item.nodeid for name in _NETWORK_ESTIMATORS)
        ):
            item.add_marker(pytest.mark.network)
