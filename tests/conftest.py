import os

import pytest

# Keep tests independent of the developer's MCT_* environment.
for _key in [k for k in os.environ if k.upper().startswith("MCT_")]:
    del os.environ[_key]


@pytest.fixture(autouse=True)
def _few_threads(monkeypatch):
    """Two cores: one torch thread per test process keeps the suite predictable."""
    import torch

    torch.set_num_threads(1)
    yield
