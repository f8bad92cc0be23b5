"""Delivery result codes: the `resultCode` of an update check's or a report's answer, and its `Result-Status`."""

from __future__ import annotations

from ..resultcodes import ResultCode, table

SUCCESS = ResultCode(1000, "Success", 200, "checked: each asked resource has an update or none; or reported")
UNKNOWN_APP = ResultCode(1003, "UnknownApp", 403, "no MpaasGateway registers this app and workspace")
UNKNOWN_TASK = ResultCode(1004, "UnknownTask", 404, "a report names no DeliveryTask of its app and workspace")
REQUEST_TOO_LARGE = ResultCode(3003, "RequestTooLarge", 413, "the body is over its limit")
MALFORMED_BODY = ResultCode(3004, "MalformedBody", 400, "the body is not a JSON object")
INVALID_REQUEST = ResultCode(4001, "InvalidRequest", 400, "a field is missing, too long or of the wrong type")
METHOD_NOT_ALLOWED = ResultCode(4005, "MethodNotAllowed", 405, "checks and reports are POSTed")
INTERNAL_ERROR = ResultCode(5000, "InternalError", 500, "delivery internal error")
STORE_UNAVAILABLE = ResultCode(5003, "StoreUnavailable", 503, "not counted now: send the report again later")

ALL = table(dict(globals()))
