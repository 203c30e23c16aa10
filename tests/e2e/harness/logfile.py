"""A child process's log file: read by tests, and its tail shown when one fails."""

import subprocess


class LogFile:
    """Mixed into a server class whose child process (`self.proc`) writes to
    `self.log_path` through the open file `self._log`."""

    log_path = None
    proc = None
    _log = None

    def stop_process(self):
        """Terminates the child (killed if it has not exited within 10 s) and closes its log."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log:
            self._log.close()
            self._log = None

    def log_text(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def log_tail(self, lines=60):
        """The last `lines` lines, or "" when there is no log (yet, or any more)."""
        try:
            return "".join(self.log_text().splitlines(keepends=True)[-lines:])
        except OSError:
            return ""
