"""A minimal HTTP client on the standard library.

http.client rather than urllib: urllib would route 127.0.0.1 through any http_proxy set in
the environment and turns 4xx/5xx into exceptions, and every test here reads 4xx/5xx."""

import http.client
import json


class Response:
    """Status, headers (names lower-cased) and body of one reply."""

    def __init__(self, status, headers, body):
        self.status, self.headers, self.raw = status, headers, body

    @property
    def json(self):
        return json.loads(self.raw)

    @property
    def code(self):
        """The filter's error code (`code` in its JSON body), or None for other replies."""
        try:
            body = self.json
        except ValueError:
            return None
        return body.get("code") if isinstance(body, dict) else None

    def __repr__(self):
        return f"<{self.status} {self.headers} {self.raw[:300]!r}>"


def request(port, path, headers=None, method="GET", body=None, timeout=10):
    """`headers` is a dict, or a list of (name, value) pairs to send a header more than once."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        if isinstance(headers, list):
            conn.putrequest(method, path)
            for name, value in headers:
                conn.putheader(name, value)
            conn.endheaders(body.encode() if isinstance(body, str) else body)
        else:
            conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        text = r.read().decode(errors="replace")
        return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, text)
    finally:
        conn.close()
