"""A real S3 API for the tests: moto's server in its own process on 127.0.0.1 (DESIGN.md section 3).

Import the fixtures into a conftest to use them: `s3_endpoint` (session: the endpoint URL) and
`s3_bucket` (per test: fake credentials in the environment and a fresh, empty bucket's name).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator

import pytest

HOST = "127.0.0.1"
STARTUP_TIMEOUT_S = 20.0
PORT_ATTEMPTS = 3
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    # boto3 honours proxy variables: keep its requests on 127.0.0.1.
    "NO_PROXY": HOST,
    "no_proxy": HOST,
}
# Variables that could send boto3 elsewhere or make it read a developer's real profile.
UNSET_AWS_VARIABLES = ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_SHARED_CREDENTIALS_FILE")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _answers(url: str) -> bool:
    """Whether the server answers HTTP (any status), bypassing proxies: only 127.0.0.1 is contacted."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=1):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def _start_moto(port: int) -> subprocess.Popen | None:
    """Start the server and wait until it answers; None if it exited first (e.g. the port was taken)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return None
        if _answers(f"http://{HOST}:{port}/"):
            return process
        time.sleep(0.1)
    _stop(process)
    raise RuntimeError(f"moto server on {HOST}:{port} did not answer within {STARTUP_TIMEOUT_S:.0f} s")


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """URL of a moto S3 server (a separate process) on a free 127.0.0.1 port, for the whole session."""
    for _ in range(PORT_ATTEMPTS):
        port = _free_port()
        process = _start_moto(port)
        if process is not None:
            break
    else:
        raise RuntimeError(f"moto server failed to start on {PORT_ATTEMPTS} free ports")
    try:
        yield f"http://{HOST}:{port}"
    finally:
        _stop(process)


@pytest.fixture
def s3_bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Name of a new empty bucket on `s3_endpoint`; fake AWS credentials are set for the test."""
    import boto3

    for name in UNSET_AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in FAKE_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    bucket = f"strata-test-{uuid.uuid4().hex[:16]}"
    client = boto3.session.Session().client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=bucket)
    return bucket
