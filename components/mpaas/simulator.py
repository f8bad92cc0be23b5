"""A mobile-client simulator: calls the gateway the way an mPaaS app does and shows what happens."""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from .crypto import envelope
from .crypto.signing import canonical, signer


@dataclass
class Call:
    operation_type: str
    body: Any
    status: int
    result_status: str
    memo: str
    trace_id: str
    response: Any
    millis: float


class MobileClient:
    """Calls the gateway like an mPaaS app; signs and seals requests when given keys."""

    def __init__(
        self,
        gateway_url: str,
        app_id: str,
        workspace_id: str,
        *,
        device_id: str | None = None,
        sign_algorithm: str | None = None,
        sign_key: bytes | None = None,
        encrypt: tuple[str, bytes, str] | None = None,
    ):
        """`encrypt`: (keyWrap, the gateway's public key PEM, cipher) to seal request bodies."""
        self.gateway_url = gateway_url.rstrip("/")
        self.app_id, self.workspace_id = app_id, workspace_id
        self.device_id = device_id or uuid.uuid4().hex[:16]
        self.http = httpx.Client(timeout=10)
        self._sign = signer(sign_algorithm, sign_key) if sign_algorithm and sign_key else None
        self._encrypt = encrypt

    def headers(
        self, operation_type: str, payload: bytes, *, path: str = "/mgw.htm", extra: dict[str, str] | None = None
    ) -> dict[str, str]:
        headers = {
            "Operation-Type": operation_type,
            "AppId": self.app_id,
            "WorkspaceId": self.workspace_id,
            "Ts": str(int(time.time() * 1000)),
            "Did": self.device_id,
            "Content-Type": "application/json",
            **(extra or {}),
        }
        if self._sign is not None:
            # Always a Nonce: it makes the signed request single-use, whether the app requires one or not.
            headers.setdefault("Nonce", uuid.uuid4().hex)
            msg = canonical(
                "POST",
                path,
                "",
                operation_type,
                self.app_id,
                self.workspace_id,
                headers["Ts"],
                headers["Nonce"],
                payload,
            )
            headers["Sign"] = base64.b64encode(self._sign(msg)).decode()
        return headers

    def seal(self, operation_type: str, payload: bytes) -> tuple[bytes, dict[str, str], bytes | None]:
        """(sealed body, key headers, session key); the payload unchanged when not encrypting."""
        if self._encrypt is None:
            return payload, {}, None
        wrap, gateway_public, cipher = self._encrypt
        key = os.urandom(envelope.KEY_BYTES)
        sealed = envelope.seal(cipher, key, payload, envelope.aad(self.app_id, operation_type))
        wrapped = base64.b64encode(envelope.wrap(wrap, gateway_public, key)).decode()
        return sealed, {"Mgw-Key-Type": wrap, "Mgw-Key": wrapped}, key

    def call(self, operation_type: str, body: Any = None) -> Call:
        payload = json.dumps(body if body is not None else {}).encode()
        payload, key_headers, session_key = self.seal(operation_type, payload)
        headers = self.headers(operation_type, payload, extra=key_headers)
        t0 = time.perf_counter()
        resp = self.http.post(f"{self.gateway_url}/mgw.htm", content=payload, headers=headers)
        millis = (time.perf_counter() - t0) * 1000
        content = resp.content
        if session_key is not None and resp.headers.get("mgw-encrypted") == "1" and self._encrypt:
            content = envelope.open_sealed(
                self._encrypt[2], session_key, content, envelope.aad(self.app_id, operation_type)
            )
        try:
            data: Any = json.loads(content)
        except ValueError:
            data = content.decode(errors="replace")
        return Call(
            operation_type,
            body,
            resp.status_code,
            resp.headers.get("result-status", ""),
            resp.headers.get("memo", ""),
            resp.headers.get("mgw-traceid", ""),
            data,
            millis,
        )

    def close(self) -> None:
        self.http.close()


DEMO_SCRIPT: list[tuple[str, Any]] = [
    ("com.demo.user.profile", {"userId": "10086"}),
    ("com.demo.echo", {"hello": "mpaas"}),
    ("com.demo.time", None),
    ("com.demo.does.not.exist", {}),
]


def run_demo(
    gateway_url: str, app_id: str = "DEMO_APP", workspace_id: str = "default", *, out: Any = print
) -> list[Call]:
    client = MobileClient(gateway_url, app_id, workspace_id)
    calls = []
    try:
        out(f"mobile client {client.device_id} -> {gateway_url}/mgw.htm (AppId={app_id}, WorkspaceId={workspace_id})")
        for op, body in DEMO_SCRIPT:
            c = client.call(op, body)
            calls.append(c)
            out(f"\n> POST /mgw.htm  Operation-Type: {op}  body: {json.dumps(body)}")
            out(f"< Result-Status: {c.result_status}  Memo: {c.memo}  Mgw-TraceId: {c.trace_id}  ({c.millis:.1f} ms)")
            if c.response not in ("", None):
                out(f"< {json.dumps(c.response, ensure_ascii=False)}")
    finally:
        client.close()
    return calls
