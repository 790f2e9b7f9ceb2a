from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def repo_root() -> Path:
    return ROOT


def pytest_configure(config):
    # tiny tensors: one thread is faster than two and immune to a busy machine
    torch.set_num_threads(1)
