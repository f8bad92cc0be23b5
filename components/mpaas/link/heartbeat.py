"""Smart heartbeat: the interval the server asks a client to ping at, adapted per device and network.

A NAT or carrier proxy drops an idle TCP connection after a time nobody tells the phone. Pinging more often
than needed costs battery; less often, the connection dies unseen. So the server starts a device at the
channel's shortest interval and lengthens it by STEP_SECONDS after every SUCCESSES_TO_GROW pings that arrive
on time, up to the longest; when a connection dies waiting for a ping (a missed interval), the interval that
failed is remembered for that device and network, and the next connection starts one step below it, and
never grows past it again until it has held there for a day. The memory lives in the hot store (Redis), so it
follows a device to any link pod.
"""

from __future__ import annotations

from dataclasses import dataclass

STEP_SECONDS = 30
SUCCESSES_TO_GROW = 3
GRACE_SECONDS = 10  # a ping may be this late (clock drift, a slow network) before the connection is dead
CEILING_DAYS = 1  # a failed interval caps the device's interval on that network for this long


@dataclass(frozen=True)
class Bounds:
    min_seconds: int = 30
    max_seconds: int = 270


@dataclass(frozen=True)
class Remembered:
    """What the store keeps per device and network."""

    seconds: int  # the interval to start at
    ceiling: int  # do not grow past it (0: no ceiling)


def clamp(seconds: int, bounds: Bounds) -> int:
    return max(bounds.min_seconds, min(bounds.max_seconds, seconds))


def start(remembered: Remembered | None, bounds: Bounds) -> int:
    return clamp(remembered.seconds if remembered else bounds.min_seconds, bounds)


def grown(seconds: int, successes: int, ceiling: int, bounds: Bounds) -> int:
    """The interval after `successes` pings in a row arrived on time."""
    if successes < SUCCESSES_TO_GROW:
        return seconds
    top = min(bounds.max_seconds, ceiling - STEP_SECONDS) if ceiling else bounds.max_seconds
    return clamp(min(seconds + STEP_SECONDS, max(top, bounds.min_seconds)), bounds)


def after_timeout(seconds: int, bounds: Bounds) -> Remembered:
    """A connection died waiting for a ping at `seconds`: start lower, and stay below it."""
    return Remembered(clamp(seconds - STEP_SECONDS, bounds), seconds)


def deadline_seconds(seconds: int) -> int:
    """How long after a frame the server waits for the next before it closes the connection."""
    return seconds + GRACE_SECONDS
