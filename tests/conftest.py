"""Shared test setup: Keras runs on the torch backend; float type and seed are reset per test."""
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "torch")
sys.path.insert(0, os.path.dirname(__file__))   # for the gradcheck helper

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from grukit import config  # noqa: E402
from grukit.utils import set_random_seed  # noqa: E402


@pytest.fixture(autouse=True)
def _reset_globals():
    config.set_floatx("float32")
    set_random_seed(1234)
    yield
    config.set_floatx("float32")


@pytest.fixture
def float64():
    config.set_floatx("float64")
    yield
    config.set_floatx("float32")


@pytest.fixture
def rng():
    return np.random.default_rng(0)

