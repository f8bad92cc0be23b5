"""Delivery result codes: the `resultCode` of an update check's answer (and its `Result-Status` header)."""

from __future__ import annotations

from ..resultcodes import ResultCode, table

SUCCESS = ResultCode(1000, "Success", 200, "checked: each asked resource has an update or none")
UNKNOWN_APP = ResultCode(1003, "UnknownApp", 403, "no MpaasGateway registers this app and workspace")
REQUEST_TOO_LARGE = ResultCode(3003, "RequestTooLarge", 413, "the check's body is over its limit")
MALFORMED_BODY = ResultCode(3004, "MalformedBody", 400, "the check's body is not a JSON object")
INVALID_REQUEST = ResultCode(4001, "InvalidRequest", 400, "a field is missing, too long or of the wrong type")
METHOD_NOT_ALLOWED = ResultCode(4005, "MethodNotAllowed", 405, "checks are POSTed")
INTERNAL_ERROR = ResultCode(5000, "InternalError", 500, "delivery internal error")

ALL = table(dict(globals()))
