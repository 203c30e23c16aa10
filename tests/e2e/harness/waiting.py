"""Free ports and bounded polling: every wait in the suite goes through `wait_for`."""

import socket
import time


_HANDED_OUT = set()


def free_port():
    """A port nothing listens on right now, picked by the OS so parallel runs do not clash.

    The OS may give the same port to two binds in a row once the first socket is closed, so
    a port is never handed out twice in one run (two such ports once became Envoy's admin
    and listener port, and Envoy refused to start). Prefer binding port 0 where the server
    can report its port (Envoy does, see harness.envoy)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def wait_for(condition, timeout=20.0, interval=0.05, what="condition"):
    """Polls `condition` until it returns a truthy value, which is returned; fails after
    `timeout` seconds rather than hanging the suite."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
