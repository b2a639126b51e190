"""Dependency floors that close known holes, enforced where they matter: checkpoint loading refuses
a torch whose weights_only=True can be bypassed, a local Ray cluster requires its token."""

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def floor(requirements: list[str], name: str) -> tuple[int, ...]:
    for req in requirements:
        m = re.fullmatch(rf"{re.escape(name)}(?:\[[^\]]*\])?>=([\d.]+)", req.replace(" ", ""))
        if m:
            return tuple(int(p) for p in m.group(1).split("."))
    raise AssertionError(f"no '{name}>=' floor in {requirements}")


def test_pyproject_floors_close_the_known_holes():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert floor(extras["train"], "torch") >= (2, 6)  # CVE-2025-32434: weights_only=True bypass up to 2.5.1
    assert floor(extras["ray"], "ray") >= (2, 59)  # the first Ray with token authentication on by default


def test_checkpoints_are_refused_under_a_torch_with_the_weights_only_bypass(tmp_path):
    from prnseg.training.checkpoint import CheckpointError, require_safe_torch

    for old in ("2.5.1", "2.2.0+cu121", "1.13.1"):
        with pytest.raises(CheckpointError, match=r"CVE-2025-32434\); pip install 'torch>=2.6'"):
            require_safe_torch(old)
    for ok in ("2.6.0", "2.13.0+cpu", "2.7.0a0+git1234", "3.0.0"):
        require_safe_torch(ok)
    require_safe_torch()  # the torch this suite runs on


@pytest.mark.slow
def test_a_local_ray_cluster_starts_with_token_authentication(monkeypatch):
    pytest.importorskip("ray")
    from ray._raylet import AuthenticationMode, get_authentication_mode

    from prnseg.serve.ray_engine import ray_cluster

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.setenv("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    with ray_cluster() as ray:
        assert ray.is_initialized()
        assert get_authentication_mode() == AuthenticationMode.TOKEN  # every RPC needs the cluster's token
    assert not ray.is_initialized()
