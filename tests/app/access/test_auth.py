from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import replace

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.conftest import in_process

TOKEN = "s3cret-token"


@pytest.fixture
def secured(settings: Settings) -> Iterator[TestClient]:
    with in_process(create_app(replace(settings, token=TOKEN))) as client:
        yield client


@pytest.mark.parametrize(
    "header", [None, "Bearer wrong", f"Basic {TOKEN}", TOKEN, f"Bearer {TOKEN}x", "Bearer "]
)
def test_writes_without_the_token_get_401_and_arm_nothing(
    secured: TestClient, sleeper: subprocess.Popen[bytes], header: str | None
) -> None:
    headers = {"Authorization": header} if header else {}
    body = {"pid": sleeper.pid, "scope_id": "s", "expires_in": 60}
    assert secured.post("/timers", json=body, headers=headers).status_code == 401
    assert secured.post("/timers/release", json=body, headers=headers).status_code == 401
    assert secured.delete("/timers/1", headers=headers).status_code == 401
    assert secured.get("/timers").json()["items"] == []


def test_writes_with_the_token_work_and_reads_stay_open(
    secured: TestClient, sleeper: subprocess.Popen[bytes]
) -> None:
    body = {"pid": sleeper.pid, "scope_id": "s", "expires_in": 60}
    headers = {"Authorization": f"Bearer {TOKEN}"}
    assert secured.post("/timers", json=body, headers=headers).status_code == 201
    assert len(secured.get("/timers").json()["items"]) == 1
    assert secured.get("/healthz").status_code == 200
