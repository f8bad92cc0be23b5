"""Analytics result codes: the `code` of an upload's answer on the native endpoint, and of each refused event.

The peer-compatible endpoints answer the way their SDKs expect (docs/analytics.md): PostHog's with HTTP status
and `{"status": "Ok"}`, Countly's with `{"result": ...}`; the codes below are counted for them too.
"""

from __future__ import annotations

from ..resultcodes import ResultCode, table

SUCCESS = ResultCode(1000, "Success", 200, "every event accepted")
PARTIAL = ResultCode(1001, "PartlyAccepted", 200, "some events refused; the others accepted")
RATE_LIMITED = ResultCode(1002, "RateLimited", 429, "the app's event rate limit is reached: retry after Retry-After")
UNKNOWN_APP = ResultCode(1003, "UnknownApp", 403, "no MpaasGateway registers this app")
REQUEST_TIMEOUT = ResultCode(3008, "RequestTimeout", 408, "the upload's body did not arrive in time")
REQUEST_TOO_LARGE = ResultCode(3003, "RequestTooLarge", 413, "upload over the size, inflated size or event limit")
MALFORMED_BODY = ResultCode(3004, "MalformedBody", 400, "the upload is not valid gzip, JSON or form data")
INTERNAL_ERROR = ResultCode(5000, "InternalError", 500, "analytics internal error")
BUSY = ResultCode(4290, "Busy", 429, "the event log is slow or unreachable: retry after Retry-After")
# Per event (in the answer's `refused` list); never fails the events around it.
INVALID_EVENT = ResultCode(4001, "InvalidEvent", 400, "an event misses its name, device or a valid timestamp")
FROM_THE_FUTURE = ResultCode(4002, "FromTheFuture", 400, "the event's time is ahead of the server's")
TOO_OLD = ResultCode(4003, "TooOld", 400, "the event's time is older than the platform keeps")
OTHER_APP = ResultCode(4004, "OtherApp", 400, "an event names another app than its upload")

ALL = table(dict(globals()))
