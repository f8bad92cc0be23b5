"""How far a failed upstream call got, which decides whether it may be retried."""


class ConnectFailed(ConnectionError):
    """The connection could not be made: the request never left."""


class UpstreamBroken(ConnectionError):
    """The connection failed after the request was (maybe) sent."""


class EndpointBusy(ConnectFailed):
    """Every connection the endpoint may have is in use, and none came free in time: the request never left."""


class ResponseTooLarge(UpstreamBroken):
    """The upstream's answer grew past the gateway's limit; the connection was dropped."""
