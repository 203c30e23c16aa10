"""A child process's log file: read by tests, and its tail shown when one fails."""


class LogFile:
    """Mixed into a server class whose child process writes to `self.log_path`."""

    log_path = None

    def log_text(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def log_tail(self, lines=60):
        """The last `lines` lines, or "" when there is no log (yet, or any more)."""
        try:
            return "".join(self.log_text().splitlines(keepends=True)[-lines:])
        except OSError:
            return ""
