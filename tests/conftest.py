import os
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
    # two cores on CI: keep torch from oversubscribing when helpers spawn processes
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
