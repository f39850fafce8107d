"""
Publish to wsserver's HTTP API (``twistd -n wsserver --http-api``) from another process, with the
standard library only:

    python publish_http.py http://127.0.0.1:8080 com.example.status ok       # from this machine, no key
    WSSERVER_KEY=...  python publish_http.py URL TOPIC ARG...                # a bearer key
    WSSERVER_KEY_NAME=backend WSSERVER_SECRET=...  python publish_http.py URL TOPIC ARG...   # signed

Prints the publication id; exits 1 with the server's error otherwise.
"""

import hashlib
import hmac
import json
import os
import secrets
import sys
import time
import urllib.error
import urllib.request


def publish(base_url, topic, args=(), kwargs=None, options=None):
    """Publish; return the publication id. ``options``: WAMP's PUBLISH options, e.g. {"retain": True}."""
    body = json.dumps({"topic": topic, "args": list(args), "kwargs": kwargs or {}, "options": options or {}}).encode()
    headers = {"Content-Type": "application/json"}
    if os.environ.get("WSSERVER_KEY"):
        headers["Authorization"] = "Bearer " + os.environ["WSSERVER_KEY"]
    elif os.environ.get("WSSERVER_SECRET"):
        # HMAC-SHA256 over timestamp "\n" nonce "\n" body; a nonce is good for one request.
        timestamp, nonce = str(int(time.time())), secrets.token_hex(16)
        message = f"{timestamp}\n{nonce}\n".encode() + body
        headers.update({
            "X-Wsserver-Key": os.environ["WSSERVER_KEY_NAME"],
            "X-Wsserver-Timestamp": timestamp,
            "X-Wsserver-Nonce": nonce,
            "X-Wsserver-Signature": hmac.new(os.environ["WSSERVER_SECRET"].encode(), message, hashlib.sha256).hexdigest(),
        })
    request = urllib.request.Request(base_url.rstrip("/") + "/publish", data=body, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)["id"]


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: publish_http.py URL TOPIC [ARG...]")
    try:
        print("published", publish(sys.argv[1], sys.argv[2], sys.argv[3:]))
    except urllib.error.HTTPError as error:
        sys.exit(f"{error.code}: {error.read().decode()}")
