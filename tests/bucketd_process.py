"""bucketd as a child process for the Python tests: the built binary on a free loopback port
with a manual clock from START, ready once /readyz answers 200."""
import http.client
import socket
import subprocess
import time

START = "2026-01-01T00:00:00Z"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """bucketd as a child process on a free port (retried: another process may take it)."""

    def __init__(self, binary, data, extra=()):
        for _ in range(5):
            self.port = free_port()
            self.proc = subprocess.Popen(
                [binary, "--listen", f"127.0.0.1:{self.port}", "--data", data,
                 "--clock", "manual", "--start-time", START, "--log-level", "warn", *extra])
            if self._wait_ready():
                return
            self.stop()
        raise RuntimeError("bucketd did not become ready")

    def _wait_ready(self):
        for _ in range(400):
            if self.proc.poll() is not None:
                return False
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/readyz")
                if conn.getresponse().status == 200:
                    return True
            except OSError:
                pass
            time.sleep(0.025)
        return False

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)
