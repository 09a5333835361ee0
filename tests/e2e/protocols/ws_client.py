"""A WebSocket call with the `websockets` library, for tests/e2e/protocols/websocket.rs.

Usage: ws_client.py URL. The proxy comes from http_proxy / https_proxy (websockets opens a
CONNECT tunnel for ws:// and wss:// alike); for wss:// the sidecar's CA is in SIDECAR_CA.
Sends "hello" with `Authorization: Bearer {/auth_token}` on the upgrade request and prints
the answer as one JSON line.
"""
import asyncio
import json
import os
import ssl
import sys

from websockets.asyncio.client import connect

url = sys.argv[1]


async def main():
    options = {}
    if url.startswith("wss:"):
        options["ssl"] = ssl.create_default_context(cafile=os.environ["SIDECAR_CA"])
    headers = {"Authorization": "Bearer {/auth_token}"}
    async with connect(url, additional_headers=headers, open_timeout=10, **options) as ws:
        await ws.send("hello")
        reply = await asyncio.wait_for(ws.recv(), 10)
        print(json.dumps({"step": "reply", "reply": reply}), flush=True)


asyncio.run(main())
