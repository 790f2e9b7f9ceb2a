import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Tests never see (or fill) the user's weights cache, catalog extensions or offline setting."""
    saved = {k: os.environ.pop(k, None) for k in ("MMRFACE_HOME", "MMRFACE_CATALOG", "MMRFACE_OFFLINE")}
    os.environ["MMRFACE_HOME"] = str(tmp_path_factory.mktemp("mmrface-home"))
    yield
    for k, v in saved.items():
        os.environ.pop(k, None)
        if v is not None:
            os.environ[k] = v


@pytest.fixture
def repo_root() -> Path:
    return ROOT


def pytest_configure(config):
    # tiny tensors: one thread is faster than two and immune to a busy machine
    torch.set_num_threads(1)
