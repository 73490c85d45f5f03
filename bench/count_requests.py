#!/usr/bin/env python3
"""Counts the HTTP requests and the request-body bytes a command sends to an
S3 server: a proxy on 127.0.0.1 relays every request to the server, reading
each one whole to count it, while the command runs with its endpoint pointed
at the proxy (the word @PROXY@ in its arguments is replaced by the proxy's
URL). Prints one line: requests, body bytes, and requests by method.

    count_requests.py UPSTREAM_PORT -- CMD ARGS...
"""
import collections
import socket
import subprocess
import sys
import threading

upstream_port = int(sys.argv[1])
command = sys.argv[sys.argv.index("--") + 1:]
lock = threading.Lock()
by_method = collections.Counter()
body_bytes = 0


def pump(src, dst):
    try:
        while data := src.recv(1 << 16):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def relay(client):
    global body_bytes
    server = socket.create_connection(("127.0.0.1", upstream_port))
    threading.Thread(target=pump, args=(server, client), daemon=True).start()
    buf = b""
    try:
        while True:
            while b"\r\n\r\n" not in buf:
                data = client.recv(1 << 16)
                if not data:
                    return
                buf += data
            head, buf = buf.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            method = lines[0].split(" ", 1)[0]
            headers = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:] if ":" in l)}
            if "chunked" in headers.get("transfer-encoding", ""):
                sys.exit(f"count_requests.py: a chunked body from {method}: not counted")
            length = int(headers.get("content-length", "0"))
            server.sendall(head + b"\r\n\r\n")
            sent = min(length, len(buf))
            server.sendall(buf[:sent])
            buf = buf[sent:]
            while sent < length:
                data = client.recv(min(1 << 20, length - sent))
                if not data:
                    return
                server.sendall(data)
                sent += len(data)
            with lock:
                by_method[method] += 1
                body_bytes += length
    finally:
        client.close()


listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(64)
endpoint = f"http://127.0.0.1:{listener.getsockname()[1]}"


def accept():
    while True:
        client, _ = listener.accept()
        threading.Thread(target=relay, args=(client,), daemon=True).start()


threading.Thread(target=accept, daemon=True).start()
result = subprocess.run([a.replace("@PROXY@", endpoint) for a in command], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
if result.returncode != 0:
    sys.stderr.write(result.stderr.decode(errors="replace")[-2000:])
    sys.exit(f"count_requests.py: the command exited with {result.returncode}")
with lock:
    methods = " ".join(f"{m}={n}" for m, n in sorted(by_method.items()))
    print(f"{sum(by_method.values())} {body_bytes} {methods}")
