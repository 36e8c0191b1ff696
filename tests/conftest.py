"""Fixtures every test may use. ``pytest --device cuda`` runs the device-aware tests (those
taking the ``device`` fixture) on a GPU; the default is the CPU."""

import functools
import os
import shutil
from pathlib import Path

import pytest
import torch

from tests.helpers import SHAKESPEARE, tiny_options as _tiny_options

torch.set_num_threads(min(2, os.cpu_count() or 1))


def pytest_addoption(parser):
    parser.addoption("--device", default="cpu", choices=("cpu", "cuda"),
                     help="device for the tests that take the `device` fixture")


def pytest_collection_modifyitems(config, items):
    """On a device other than the CPU, tests marked `cpu_only` are skipped."""
    if config.getoption("--device") == "cpu":
        return
    skip = pytest.mark.skip(reason="asserts what charlm guarantees on the CPU only")
    for item in items:
        if "cpu_only" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def device(pytestconfig) -> str:
    name = pytestconfig.getoption("--device")
    if name == "cuda" and not torch.cuda.is_available():
        pytest.exit("--device cuda: no CUDA device here", returncode=4)
    return name


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Every test runs in its own directory with its own prepared-corpus cache."""
    monkeypatch.setenv("CHARLM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def tiny_options(device):
    """``tiny_options(**overrides)``: options of a run that trains in about a second, on the
    test device."""
    return functools.partial(_tiny_options, device)


@pytest.fixture
def small_text() -> str:
    """About 20k characters of Shakespeare: enough for a few training chunks."""
    return SHAKESPEARE.read_text(encoding="utf-8")[:20000]


@pytest.fixture
def small_corpus(tmp_path, small_text) -> Path:
    path = tmp_path / "small.txt"
    path.write_text(small_text, encoding="utf-8")
    return path


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.fixture
def browser():
    path = chromium()
    if path is None:
        if os.environ.get("CHARLM_REQUIRE_BROWSER"):
            pytest.fail("no chromium on this machine (`apt-get install chromium`)")
        pytest.skip("no chromium on this machine")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=["--no-sandbox"])
        yield b
        b.close()
