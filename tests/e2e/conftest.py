"""The real guest image, built (or taken from the cache) once per test session."""

from __future__ import annotations

import pytest

from bench.guest_image import GuestImages, guest_images


@pytest.fixture(scope="session")
def guest() -> GuestImages:
    return guest_images()
