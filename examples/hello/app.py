"""The demo app `scripts/up` deploys: answers / with a greeting, /healthz with 200."""
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def version():
    try:
        with open("VERSION") as f:
            return f.read().strip()
    except OSError:
        return "unknown"


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/healthz":
            body = b"ok\n"
        else:
            body = f"{os.environ.get('GREETING', 'hello')} {version()}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
print(f"listening on 127.0.0.1:{os.environ['PORT']}", flush=True)
server.serve_forever()
