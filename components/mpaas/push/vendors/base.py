"""What every vendor channel client is: one notification to some device tokens, and a credentials check.

A client speaks its vendor's documented protocol (APNs, FCM HTTP v1, Huawei Push Kit, Xiaomi, OPPO, vivo,
Honor) over HTTP, with the credentials from the Secret its PushChannel names and the endpoint override of
`spec.endpoint`. It never raises for a vendor's answer: every token gets a `SendResult` whose `outcome` tells
the push worker what to do next (prune the token, back off, retry, count a failure), and whose `reason` is the
vendor's own error string, shown to users as it is.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Outcome(StrEnum):
    SENT = "Sent"  # the vendor accepted it for this token
    INVALID_TOKEN = "InvalidToken"  # the token is dead (unregistered, malformed, of another app): prune it
    RATE_LIMITED = "RateLimited"  # 429 or the vendor's rate error: retry after `retry_after`
    QUOTA_EXCEEDED = "QuotaExceeded"  # the day's quota is used up (Xiaomi, OPPO, vivo): retry tomorrow
    PAYLOAD_TOO_LARGE = "PayloadTooLarge"  # over the vendor's limit: never sent, not retried
    AUTH_FAILED = "AuthFailed"  # credentials refused (revoked key, wrong secret): nothing sent until fixed
    RETRY = "Retry"  # the vendor or the network failed (5xx, timeout, reset): retry with backoff
    REJECTED = "Rejected"  # refused for another reason that a retry will not fix (bad topic, bad request)


@dataclass(frozen=True)
class Notification:
    """One message as the vendors show it. `data` travels to the app as key/value strings."""

    message_id: str  # the platform's id; sent as the vendor's collapse/dedupe id where it has one
    title: str | None = None
    body: str | None = None
    data: Mapping[str, str] = field(default_factory=dict)
    ttl_seconds: int = 86400  # how long the vendor keeps it for an offline device; 0: now or never
    urgent: bool = True  # high priority (wake the device) or normal
    collapse_key: str | None = None  # a newer message with the same key replaces the older one
    badge: int | None = None  # APNs badge; Huawei/Honor badge where supported
    sound: str | None = None
    category: str | None = None  # APNs category / Android click action or channel, where the vendor has one
    extra: Mapping[str, Any] = field(default_factory=dict)  # per-vendor fields passed through (documented per client)


@dataclass(frozen=True)
class SendResult:
    token: str
    outcome: Outcome
    reason: str = ""  # the vendor's own error code or text, e.g. "BadDeviceToken", "UNREGISTERED", "80300007"
    status: int = 0  # the HTTP status of the vendor's answer (0: no answer)
    retry_after: float | None = None  # seconds, for RateLimited/QuotaExceeded/Retry when the vendor says
    vendor_id: str | None = None  # the vendor's id of the accepted message (apns-id, FCM name, msg id...)

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.SENT


@dataclass(frozen=True)
class CredentialCheck:
    ok: bool
    reason: str  # CamelCase for the PushChannel condition: Valid, AuthFailed, Unreachable, InvalidCredentials
    message: str  # the vendor's own answer, for the condition's message


class VendorClient(ABC):
    """One PushChannel's connection to its vendor. Safe to share between tasks; `close` releases the pool."""

    max_payload: int  # bytes of the vendor's payload limit, checked before sending (PayloadTooLarge)
    max_tokens: int = 1  # tokens one request may carry (1 for APNs/FCM v1; Huawei 1000, Xiaomi 1000, ...)
    # A notification with the collapse key of one shown replaces it on the device (apns-collapse-id, the
    # Android notification's tag or notify_id): what a recall at the vendor sends (docs/push.md, "Recall").
    replaces_shown: bool = True

    @abstractmethod
    async def send(self, notification: Notification, tokens: Sequence[str]) -> list[SendResult]:
        """One result per token, in order. Splits `tokens` into requests of at most `max_tokens`."""

    @abstractmethod
    async def check_credentials(self) -> CredentialCheck:
        """Asks the vendor whether the credentials are good (gets a token, or sends a request the vendor
        answers with an auth error when they are not), without sending a notification to any device."""

    @abstractmethod
    async def close(self) -> None: ...


class CredentialsError(ValueError):
    """The Secret's data cannot make credentials (a key that does not parse, a missing field): says what to fix."""
