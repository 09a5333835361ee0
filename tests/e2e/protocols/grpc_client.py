"""gRPC calls through the sidecar for tests/e2e/protocols/grpc.rs.

Messages are raw bytes (the generic API with no serializers), so no protoc is needed.
Usage: grpc_client.py TARGET tls|plain. The proxy comes from grpc_proxy / https_proxy, and
for tls the roots from GRPC_DEFAULT_SSL_ROOTS_FILE_PATH, as the README's client guide says.
Prints one JSON line per step.
"""
import json
import queue
import sys

import grpc

target, mode = sys.argv[1], sys.argv[2]
metadata = [("authorization", "Bearer {/auth_token}")]
if mode == "tls":
    channel = grpc.secure_channel(target, grpc.ssl_channel_credentials())
else:
    channel = grpc.insecure_channel(target)


def out(**fields):
    print(json.dumps(fields), flush=True)


reply, call = channel.unary_unary("/test.Echo/Unary").with_call(b"hello", metadata=metadata, timeout=20)
out(step="unary", reply=reply.decode(), initial=dict(call.initial_metadata()),
    trailing=dict(call.trailing_metadata()), code=call.code().name)

# Server streaming: the upstream sends "two" only after Release, called once "one" arrived.
stream = channel.unary_stream("/test.Echo/ServerStream")(b"go", metadata=metadata, timeout=20)
out(step="stream-first", reply=next(stream).decode())
channel.unary_unary("/test.Echo/Release")(b"", metadata=metadata, timeout=20)
rest = [m.decode() for m in stream]
out(step="stream-rest", replies=rest, trailing=dict(stream.trailing_metadata()), code=stream.code().name)

# Bidi ping-pong: each message is sent only after the answer to the previous one arrived.
outgoing = queue.Queue()


def requests():
    while True:
        message = outgoing.get()
        if message is None:
            return
        yield message


bidi = channel.stream_stream("/test.Echo/Bidi")(requests(), metadata=metadata, timeout=20)
answers = []
for word in [b"ping1", b"ping2", b"ping3"]:
    outgoing.put(word)
    answers.append(next(bidi).decode())
outgoing.put(None)
leftover = [m.decode() for m in bidi]
out(step="bidi", replies=answers, leftover=leftover, code=bidi.code().name)

# A deadline: the upstream never answers, the client gives up after one second and resets.
try:
    channel.unary_unary("/test.Echo/Hang")(b"x", metadata=metadata, timeout=1)
    out(step="hang", code="OK")
except grpc.RpcError as error:
    out(step="hang", code=error.code().name)
