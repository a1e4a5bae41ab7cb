"""The one marker not set where its tests are: the embedders' docstring examples.

Every test module marks its own tests ``network`` (``pytestmark`` or
``@pytest.mark.network``) when they build Keras networks or start
TensorFlow in a new process; tests/test_suite_markers.py checks that a
module which builds a network says so. The docstring examples of the
embedders package cannot carry a marker, so they are marked here, by where
they live.
"""

import pytest


def pytest_collection_modifyitems(config, items):
    for item in items:
        if isinstance(item, pytest.DoctestItem) and "embedders" in item.path.parts:
            item.add_marker(pytest.mark.network)
