"""Gateway result codes, returned in the `Result-Status` response header.

mPaaS clients branch on these codes, not on the HTTP status: on `/mgw.htm`
every gateway decision is answered with HTTP 200 and a code; the REST-style
path `/api/<operationType>` also sets the matching HTTP status. The table is
documented in docs/gateway.md; codes 6000-6999 are the backend's own business
codes, passed through unchanged when the upstream sets `Result-Status`.
"""

from __future__ import annotations

from ..resultcodes import ResultCode, table

SUCCESS = ResultCode(1000, "Success", 200, "success")
ACCESS_DENIED = ResultCode(1001, "AccessDenied", 403, "this app may not call this operation type")
RATE_LIMITED = ResultCode(1002, "RateLimited", 429, "too many requests: rate limit of this API or app reached")
UNKNOWN_APP = ResultCode(1003, "UnknownApp", 403, "AppId/WorkspaceId not registered on this gateway")
OVERLOADED = ResultCode(1004, "Overloaded", 503, "upstream concurrency limit reached, try again shortly")
LOGIN_REQUIRED = ResultCode(2000, "LoginRequired", 401, "this API needs a valid login session")
OPERATION_TYPE_MISSING = ResultCode(3000, "OperationTypeMissing", 400, "Operation-Type header missing")
OPERATION_TYPE_UNKNOWN = ResultCode(3001, "OperationTypeUnknown", 404, "no API registered for this operation type")
API_OFFLINE = ResultCode(3002, "ApiOffline", 503, "this API is offline")
REQUEST_TOO_LARGE = ResultCode(3003, "RequestTooLarge", 413, "request body exceeds the gateway's limit")
MALFORMED_BODY = ResultCode(3004, "MalformedBody", 400, "request body does not match its Content-Type")
DUPLICATE_HEADER = ResultCode(3005, "DuplicateHeader", 400, "a single-valued protocol header was sent more than once")
UPSTREAM_TIMEOUT = ResultCode(4001, "UpstreamTimeout", 504, "upstream did not answer in time")
UPSTREAM_UNAVAILABLE = ResultCode(4002, "UpstreamUnavailable", 502, "upstream could not be reached")
UPSTREAM_ERROR = ResultCode(4003, "UpstreamError", 502, "upstream answered with an error")
CIRCUIT_OPEN = ResultCode(4004, "CircuitOpen", 503, "too many upstream endpoints failing; failing fast")
UPSTREAM_RESPONSE_TOO_LARGE = ResultCode(
    4005, "UpstreamResponseTooLarge", 502, "upstream response exceeds the gateway's limit"
)
INTERNAL_ERROR = ResultCode(5000, "InternalError", 500, "gateway internal error")
GATEWAY_NOT_READY = ResultCode(5001, "GatewayNotReady", 503, "gateway has no configuration yet")
SIGNATURE_MISSING = ResultCode(7001, "SignatureMissing", 401, "Sign header missing")
SIGNATURE_INVALID = ResultCode(7002, "SignatureInvalid", 401, "signature does not verify")
TIMESTAMP_MISSING = ResultCode(7003, "TimestampMissing", 401, "Ts header missing or not epoch milliseconds")
TIMESTAMP_EXPIRED = ResultCode(7004, "TimestampExpired", 401, "Ts outside the allowed window")
NONCE_MISSING = ResultCode(7005, "NonceMissing", 401, "Nonce header missing")
NONCE_REPLAYED = ResultCode(7006, "NonceReplayed", 401, "this Nonce was already used")
KEY_UNAVAILABLE = ResultCode(7007, "KeyUnavailable", 503, "the app's signature key is not configured")
DECRYPTION_FAILED = ResultCode(7010, "DecryptionFailed", 400, "the request body or its session key does not decrypt")
ENCRYPTION_REQUIRED = ResultCode(7011, "EncryptionRequired", 400, "this app must encrypt its request bodies")

# Every code defined above, in order: the table in docs/gateway.md is checked against it.
ALL = table(dict(globals()))
BY_CODE = {c.code: c for c in ALL}
BUSINESS_CODES = range(6000, 7000)
