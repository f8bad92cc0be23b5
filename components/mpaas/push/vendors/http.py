"""What the vendor clients share, so that each vendor module holds only its vendor's protocol: one HTTP client
configuration, a bounded read of an answer, Retry-After, the failure every token of a request gets, the OAuth 2.0
token call, the credentials check of a token-based vendor, and the day clock of the vendors with daily quotas.

Huawei Push Kit's result codes are here too: Honor's push keeps them (see honor.py), so both read them from one
place rather than one vendor module from another.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any

import httpx

from .auth import TokenCache
from .base import CredentialCheck, CredentialsError, Outcome, SendResult

MAX_ANSWER = 64 * 1024  # bytes of an answer read at most: every vendor's JSON fits, a runaway body does not
TIMEOUT = httpx.Timeout(10.0, connect=5.0)
CHINA = timezone(timedelta(hours=8))  # Xiaomi, OPPO and vivo count their daily quotas in China time


def new_http(*, max_connections: int = 64, max_keepalive: int = 16, **kwargs: Any) -> httpx.AsyncClient:
    """The client a vendor gets when none is passed in: bounded timeouts and pool, and no redirects (a vendor API
    never redirects a send; following one would carry credentials elsewhere). `kwargs` go to httpx (APNs: HTTP/2,
    its TLS context)."""
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_keepalive)
    return httpx.AsyncClient(timeout=TIMEOUT, limits=limits, follow_redirects=False, **kwargs)


@dataclass(frozen=True)
class Answer:
    """A vendor's answer with at most MAX_ANSWER bytes of its body (a longer one is cut, and then is not JSON)."""

    status: int
    headers: httpx.Headers
    body: bytes
    cut: bool = False  # the body went on past MAX_ANSWER

    def json(self) -> Any:
        """The body's JSON, or None when it is not JSON (or was cut)."""
        if self.cut:
            return None
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    @property
    def doc(self) -> dict[str, Any] | None:
        """The body's JSON object, or None: what every vendor but APNs answers."""
        doc = self.json()
        return doc if isinstance(doc, dict) else None

    def integer(self, key: str) -> int | None:
        """A JSON integer field of the object (`code`, `result`); None when missing or not an integer."""
        value = (self.doc or {}).get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None


async def read_answer(response: httpx.Response) -> Answer:
    """Reads at most MAX_ANSWER bytes (decoded) of a streamed response: a vendor, or whatever stands at its
    endpoint, cannot make a client hold an unbounded body."""
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > MAX_ANSWER:
            break
    cut = len(body) > MAX_ANSWER
    del body[MAX_ANSWER:]
    return Answer(response.status_code, response.headers, bytes(body), cut)


async def call(http: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> Answer:
    """One request, its answer read by `read_answer`; httpx.HTTPError when there is no answer."""
    async with http.stream(method, url, **kwargs) as response:
        return await read_answer(response)


async def post(http: httpx.AsyncClient, url: str, **kwargs: Any) -> Answer:
    return await call(http, "POST", url, **kwargs)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After value: delta-seconds or an HTTP date (RFC 9110 §10.2.3); None when absent or
    unreadable. A date without a zone is taken as UTC, as HTTP dates are."""
    value = (value or "").strip()
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(when.timestamp() - time.time(), 0.0)


def retry_after(headers: httpx.Headers) -> float | None:
    """An answer's Retry-After, in seconds."""
    return parse_retry_after(headers.get("retry-after"))


def seconds_to_midnight(zone: tzinfo, now: float | None = None) -> float:
    """Seconds until the next midnight in `zone`: when a vendor's daily quota counted in that zone resets."""
    t = datetime.fromtimestamp(time.time() if now is None else now, zone)
    midnight = (t + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - t).total_seconds()


def outcome_of_status(status: int) -> Outcome:
    """What an HTTP status means when the answer carries no vendor code (a proxy, a gateway, a bare error)."""
    if status == 429:
        return Outcome.RATE_LIMITED
    if status == 413:
        return Outcome.PAYLOAD_TOO_LARGE
    if status >= 500:
        return Outcome.RETRY
    if status in (401, 403):
        return Outcome.AUTH_FAILED
    return Outcome.REJECTED


def snippet(body: bytes) -> str:
    """The start of a body that is not the vendor's JSON, for a reason or a message."""
    return body[:200].decode("utf-8", "replace")


class VendorFailure(Exception):
    """A call that got no usable answer (token refused, network down, an error for the whole request): the
    outcome every token of it gets."""

    def __init__(self, outcome: Outcome, reason: str, message: str, status: int = 0, retry_after: float | None = None):
        super().__init__(message)
        self.outcome, self.reason, self.message, self.status, self.retry_after = (
            outcome,
            reason,
            message,
            status,
            retry_after,
        )

    def result(self, token: str) -> SendResult:
        return SendResult(token, self.outcome, self.reason, self.status, self.retry_after)


def status_failure(answer: Answer, vendor: str) -> VendorFailure:
    """The failure of an answer without the vendor's code, by its HTTP status; Retry-After when a retry is due."""
    outcome = outcome_of_status(answer.status)
    wait = retry_after(answer.headers) if outcome in (Outcome.RATE_LIMITED, Outcome.RETRY) else None
    return VendorFailure(
        outcome, f"HTTP {answer.status}", f"{vendor} answered HTTP {answer.status}", answer.status, wait
    )


async def fetch_access_token(http: httpx.AsyncClient, url: str, form: Mapping[str, str]) -> tuple[str, float]:
    """An OAuth 2.0 access token from a form post (client credentials, a JWT bearer assertion): the token and the
    seconds it lives; VendorFailure saying why not. Refusals are RFC 6749 §5.2 {"error", "error_description"},
    with Huawei's `sub_error` added to the message when there is one."""
    try:
        answer = await post(http, url, data=dict(form))
    except httpx.HTTPError as e:
        raise VendorFailure(Outcome.RETRY, type(e).__name__, f"token endpoint unreachable: {e}") from None
    doc = answer.doc
    if answer.status == 200 and doc is not None and isinstance(doc.get("access_token"), str):
        try:
            lifetime = float(doc.get("expires_in", 3600))
        except (TypeError, ValueError):
            lifetime = 3600.0
        return doc["access_token"], lifetime
    after = retry_after(answer.headers)
    if answer.status >= 500 or answer.status in (200, 429):
        outcome = Outcome.RATE_LIMITED if answer.status == 429 else Outcome.RETRY
        raise VendorFailure(outcome, f"HTTP {answer.status}", snippet(answer.body), answer.status, after)
    if doc is None or "error" not in doc:
        raise VendorFailure(Outcome.AUTH_FAILED, f"HTTP {answer.status}", snippet(answer.body), answer.status, after)
    reason = str(doc["error"])
    message = str(doc.get("error_description") or reason)
    if doc.get("sub_error") is not None:
        message += f" (sub_error {doc['sub_error']})"
    raise VendorFailure(Outcome.AUTH_FAILED, reason, message, answer.status)


async def check_access(tokens: TokenCache, valid: str, *, with_reason: bool = True) -> CredentialCheck:
    """check_credentials of a vendor with access tokens: a fresh token means the credentials are good.
    `with_reason` puts the failure's reason before its message (token endpoints whose message is free text)."""
    tokens.invalidate()
    try:
        await tokens.get()
    except VendorFailure as f:
        reason = "AuthFailed" if f.outcome is Outcome.AUTH_FAILED else "Unreachable"
        return CredentialCheck(False, reason, f"{f.reason}: {f.message}" if with_reason else f.message)
    return CredentialCheck(True, "Valid", valid)


def secret_text(
    secret: Mapping[str, bytes], key: str, *, missing: str | None = None, not_text: str | None = None
) -> str:
    """A text value of the credentials Secret, stripped; CredentialsError saying what to fix otherwise (`missing`
    and `not_text`: the vendor's own words for an absent or empty value and for bytes that are not UTF-8)."""
    raw = secret.get(key)
    if not raw:
        raise CredentialsError(missing or f"{key}: missing from the credentials Secret")
    try:
        value = raw.decode().strip()
    except UnicodeDecodeError:
        raise CredentialsError(not_text or f"{key}: not UTF-8 text") from None
    if not value:
        raise CredentialsError(missing or f"{key}: empty")
    return value


def merge(message: dict[str, Any], extra: Mapping[str, Any]) -> None:
    """Merges a notification's per-vendor `extra` into the vendor's message, dict values one level deep."""
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(message.get(key), dict):
            message[key].update(value)
        else:
            message[key] = value


def payload_size(message: Mapping[str, Any]) -> int:
    """Bytes of a message's compact JSON without its `token`: what FCM, Huawei and Honor count against 4096."""
    return len(json.dumps({k: v for k, v in message.items() if k != "token"}, separators=(",", ":")).encode())


# Huawei Push Kit's result codes (see huawei.py for the sources); Honor answers with the same ones.
PUSH_KIT_TOKEN_REFUSED = {"80200001", "80200003"}  # refresh the access token and send once more
PUSH_KIT_OUTCOMES = {
    "80200001": Outcome.AUTH_FAILED,
    "80200003": Outcome.AUTH_FAILED,
    "80300002": Outcome.AUTH_FAILED,
    "80300007": Outcome.INVALID_TOKEN,
    "80300008": Outcome.PAYLOAD_TOO_LARGE,
    "80600003": Outcome.RETRY,
    "81000001": Outcome.RETRY,
}


def push_kit_failure(answer: Answer, code: str | None, tokens: Sequence[str]) -> list[SendResult]:
    """Results of a Push Kit (Huawei, Honor) answer that is not a success: flow control (429, 503), the code, or
    the HTTP status."""
    status = answer.status
    if status in (429, 503):
        outcome = Outcome.RATE_LIMITED
    elif code in PUSH_KIT_OUTCOMES:
        outcome = PUSH_KIT_OUTCOMES[code]
    elif status >= 500:
        outcome = Outcome.RETRY
    elif status in (401, 403):
        outcome = Outcome.AUTH_FAILED
    else:
        outcome = Outcome.REJECTED
    reason = code or f"HTTP {status}: {snippet(answer.body)}"
    after = retry_after(answer.headers)
    return [SendResult(t, outcome, reason, status, after) for t in tokens]
