"""How far a failed upstream call got, which decides whether it may be retried."""


class ConnectFailed(ConnectionError):
    """The connection could not be made: the request never left."""


class UpstreamBroken(ConnectionError):
    """The connection failed after the request was (maybe) sent."""
