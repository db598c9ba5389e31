"""A real S3-compatible server for tests: moto's server in a subprocess on 127.0.0.1.

The server is a separate process (``python -m moto.server``) listening on a
free port, so it is reachable over HTTP from the test process and from any
other process (Ray workers included): hand them :meth:`S3TestServer.env`.

* ``stop()`` / ``start()`` stop and restart it on the *same* port. moto keeps
  its state in memory, so a restarted server is empty, unless
  ``stop(keep_data=True)`` was used: then every bucket and object (with its
  content type) is copied out before stopping and put back on the next start.
* ``pause()`` / ``resume()`` freeze the process (SIGSTOP/SIGCONT): connections
  are accepted by the kernel but never answered; the state is kept.
* ``enable_auth()`` makes the server check signatures and IAM permissions (see
  there); ``disable_auth()`` turns that off again.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import boto3
from botocore.config import Config

__all__ = ["AuthCredentials", "S3TestServer", "free_port"]

ACCESS_KEY = "testing"
SECRET_KEY = "testing"
REGION = "us-east-1"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class AuthCredentials:
    """Keys made by :meth:`S3TestServer.enable_auth`."""

    allowed: tuple[str, str]
    """(access key id, secret) of a user allowed ``s3:*`` on everything."""
    denied: tuple[str, str]
    """(access key id, secret) of a user with no permissions at all."""


class S3TestServer:
    """Start, stop, restart and seed a moto S3 server subprocess."""

    def __init__(self, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port or free_port(host)
        self.endpoint_url = f"http://{host}:{self.port}"
        self.log_path = Path(tempfile.gettempdir()) / f"moto-s3-{self.port}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._paused = False
        self._auth = False
        self._snapshot: list[tuple[str, str, bytes, str | None]] | None = None
        self._atexit = False

    # --- lifecycle ----------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 30.0) -> S3TestServer:
        """Start the server (no-op when running) and wait until it answers."""
        if self.running:
            return self
        if not self._atexit:
            atexit.register(self.stop)
            self._atexit = True
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        finally:
            log.close()
        self._paused = self._auth = False
        deadline = time.monotonic() + timeout
        while not self._answers():
            if not self.running or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"moto server did not start on {self.endpoint_url}:\n{self.log_tail()}")
            time.sleep(0.1)
        if self._snapshot is not None:
            self._restore(self._snapshot)
            self._snapshot = None
        return self

    def stop(self, *, keep_data: bool = False) -> None:
        """Stop the server (no-op when stopped); ``keep_data`` restores the state on restart."""
        if self._proc is None:
            return
        if self._paused:
            self.resume()
        if keep_data and self.running:
            if self._auth:
                self.disable_auth()
            self._snapshot = self._take_snapshot()
        proc, self._proc = self._proc, None
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def restart(self, *, keep_data: bool = True) -> S3TestServer:
        self.stop(keep_data=keep_data)
        return self.start()

    def pause(self) -> None:
        """Freeze the server process: requests hang until :meth:`resume`."""
        if self._proc is not None and not self._paused:
            os.kill(self._proc.pid, signal.SIGSTOP)
            self._paused = True

    def resume(self) -> None:
        if self._proc is not None and self._paused:
            os.kill(self._proc.pid, signal.SIGCONT)
            self._paused = False

    def ensure_ready(self) -> S3TestServer:
        """Running, not paused, auth checks off: the state a fresh test expects."""
        self.resume()
        self.start()
        if self._auth:
            self.disable_auth()
        return self

    def reset(self) -> None:
        """Delete every bucket and object (and IAM user) on the server."""
        self._post("/moto-api/reset", b"")

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> S3TestServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- clients and data ---------------------------------------------------

    def env(self) -> dict[str, str]:
        """Environment variables that point boto3 (any process) at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
        }

    def client(self, service: str = "s3", **kwargs: Any) -> Any:
        """A boto3 client for this server (test credentials unless overridden)."""
        options: dict[str, Any] = {
            "endpoint_url": self.endpoint_url,
            "aws_access_key_id": ACCESS_KEY,
            "aws_secret_access_key": SECRET_KEY,
            "region_name": REGION,
            "config": Config(connect_timeout=2, retries={"max_attempts": 2, "mode": "standard"}),
        }
        options.update(kwargs)
        session: Any = boto3.session.Session()
        return session.client(service, **options)

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def put_tree(
        self,
        bucket: str,
        prefix: str,
        files: Mapping[str, bytes | str],
        content_type: str | None = None,
    ) -> None:
        """Upload ``{relative path: content}`` below ``prefix``, in parallel."""
        client = self.client()
        extra = {"ContentType": content_type} if content_type else {}

        def put(item: tuple[str, bytes | str]) -> None:
            rel, body = item
            key = "/".join(p for p in (prefix.strip("/"), rel.lstrip("/")) if p)
            data = body.encode() if isinstance(body, str) else body
            client.put_object(Bucket=bucket, Key=key, Body=data, **extra)

        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(put, files.items()))

    # --- authentication -----------------------------------------------------

    def enable_auth(self) -> AuthCredentials:
        """Make the server check every request's signature and IAM permissions.

        moto's ``/moto-api/reset-auth`` sets ``INITIAL_NO_AUTH_ACTION_COUNT``
        in the server process: the next N requests pass unchecked, later ones
        are checked. The 5 unchecked requests create two IAM users with keys;
        after that the ``testing`` keys of :meth:`env` are refused
        (``InvalidAccessKeyId``), a wrong secret gives ``SignatureDoesNotMatch``
        and the ``denied`` user gets ``AccessDenied``. No other client may talk
        to the server meanwhile (it would use up the unchecked requests).
        """
        tag = uuid.uuid4().hex[:8]
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
        }
        iam = self.client("iam")
        self._post("/moto-api/reset-auth", b"5")
        self._auth = True
        keys = []
        for user in (f"allowed-{tag}", f"denied-{tag}"):
            iam.create_user(UserName=user)
            key = iam.create_access_key(UserName=user)["AccessKey"]
            keys.append((key["AccessKeyId"], key["SecretAccessKey"]))
        iam.put_user_policy(UserName=f"allowed-{tag}", PolicyName="s3-all", PolicyDocument=json.dumps(policy))
        return AuthCredentials(allowed=keys[0], denied=keys[1])

    def disable_auth(self) -> None:
        self._post("/moto-api/reset-auth", b"inf")
        self._auth = False

    # --- internals ----------------------------------------------------------

    def _post(self, path: str, data: bytes) -> bytes:
        request = urllib.request.Request(
            self.endpoint_url + path,
            data=data,
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return bytes(response.read())

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.endpoint_url + "/moto-api/", timeout=1):
                return True
        except (urllib.error.URLError, OSError):
            return False

    def _take_snapshot(self) -> list[tuple[str, str, bytes, str | None]]:
        client = self.client()
        objects: list[tuple[str, str, bytes, str | None]] = []
        for bucket in client.list_buckets().get("Buckets", []):
            name = bucket["Name"]
            objects.append((name, "", b"", None))  # the bucket itself, even when empty
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
                for item in page.get("Contents", []):
                    got = client.get_object(Bucket=name, Key=item["Key"])
                    objects.append((name, item["Key"], got["Body"].read(), got.get("ContentType")))
        return objects

    def _restore(self, objects: list[tuple[str, str, bytes, str | None]]) -> None:
        client = self.client()
        for bucket, key, data, content_type in objects:
            if not key:
                client.create_bucket(Bucket=bucket)
                continue
            extra = {"ContentType": content_type} if content_type else {}
            client.put_object(Bucket=bucket, Key=key, Body=data, **extra)
