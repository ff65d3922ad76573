"""Raw D-Bus method calls in bulk, driven over a pipe, as any user.

    python -m tests.helpers.raw_bus_client

connects to the system bus (``DBUS_SYSTEM_BUS_ADDRESS``) and reads batches
from standard input, one JSON object a line: ``{"groups": [[call, ...],
...]}``.  The calls of a group are sent back to back without waiting
(pipelined); the next group starts once every reply of the previous one is
in.  Each call is ``{"path", "interface", "member", "signature", "body",
"interactive"}`` and goes out as a raw message with exactly that signature,
so a wrong signature reaches the service as it is (dbus-next's proxies
would refuse it first).  The answer, one JSON line per batch, lists
``{"type": "return"|"error"|"timeout", "error", "signature", "body",
"seconds"}`` per call, in order (``seconds``: from sending to the answer).

Values travel as JSON through :func:`encode` and :func:`decode`, which
follow the signature: ``ay`` as a list of numbers, dicts as lists of
``[key, value]`` pairs, structs as lists, variants as ``[signature,
value]``.  Floats may be NaN or infinite (Python's JSON allows it).

Run as ``nobody`` (``private_bus.nobody_command``) it is the unprivileged
client of a test; as root, the privileged one.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from dbus_next import BusType, Message, MessageFlag, MessageType, Variant
from dbus_next.aio import MessageBus
from dbus_next.signature import SignatureTree, SignatureType

# momd's own connection class: plain dbus-next drops the connection when the
# socket buffer fills up (BlockingIOError), which a pipelined burst does;
# this one waits for the socket instead.
from momservice.bus.connection import MomMessageBus
from momservice.contract import BUS_NAME

#: Per call, and generous: a loaded machine is slow, not broken.
CALL_TIMEOUT = 120.0
#: Calls in flight at once: the system bus answers LimitsExceeded beyond
#: 128 pending replies per connection.
WINDOW = 100


def _encode_type(t: SignatureType, value: Any) -> Any:
    token = t.token
    if token == "v":
        return [value.signature, _encode_type(value.type, value.value)]
    if token == "a":
        child = t.children[0]
        if child.token == "{":
            key_t, value_t = child.children
            return [[_encode_type(key_t, k), _encode_type(value_t, v)]
                    for k, v in value.items()]
        if child.token == "y":
            return list(value)
        return [_encode_type(child, v) for v in value]
    if token == "(":
        return [_encode_type(c, v) for c, v in zip(t.children, value)]
    return value


def _decode_type(t: SignatureType, value: Any) -> Any:
    token = t.token
    if token == "v":
        signature, inner = value
        tree = SignatureTree(signature)
        return Variant(tree, _decode_type(tree.types[0], inner))
    if token == "a":
        child = t.children[0]
        if child.token == "{":
            key_t, value_t = child.children
            return {_decode_type(key_t, k): _decode_type(value_t, v) for k, v in value}
        if child.token == "y":
            return bytes(value)
        return [_decode_type(child, v) for v in value]
    if token == "(":
        return [_decode_type(c, v) for c, v in zip(t.children, value)]
    if token == "d":
        return float(value)
    return value


def encode(signature: str, body: list) -> list:
    """A message body (Python values, Variants) as JSON-able values."""
    types = SignatureTree(signature).types
    return [_encode_type(t, v) for t, v in zip(types, body)]


def decode(signature: str, body: list) -> list:
    """The inverse of :func:`encode`: a body dbus-next can marshal."""
    types = SignatureTree(signature).types
    return [_decode_type(t, v) for t, v in zip(types, body)]


async def _one(bus: MessageBus, call: dict, window: asyncio.Semaphore) -> dict:
    async with window:
        return await _call(bus, call)


async def _call(bus: MessageBus, call: dict) -> dict:
    flags = (MessageFlag.ALLOW_INTERACTIVE_AUTHORIZATION if call.get("interactive")
             else MessageFlag.NONE)
    message = Message(destination=call.get("destination", BUS_NAME),
                      path=call["path"], interface=call.get("interface"),
                      member=call["member"], signature=call["signature"],
                      body=decode(call["signature"], call["body"]), flags=flags)
    sent = time.monotonic()
    try:
        reply = await asyncio.wait_for(bus.call(message), CALL_TIMEOUT)
    except asyncio.TimeoutError:
        return {"type": "timeout", "seconds": CALL_TIMEOUT}
    seconds = time.monotonic() - sent
    body = reply.body
    if reply.message_type == MessageType.ERROR:
        return {"type": "error", "error": reply.error_name, "signature": reply.signature,
                "body": [str(b) for b in body], "seconds": seconds}
    return {"type": "return", "signature": reply.signature,
            "body": encode(reply.signature, body), "seconds": seconds}


async def _main() -> None:
    bus = await MomMessageBus(bus_type=BusType.SYSTEM).connect()
    loop = asyncio.get_running_loop()
    window = asyncio.Semaphore(WINDOW)
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        results: list[dict] = []
        for group in json.loads(line)["groups"]:
            # Tasks start in order, so the messages leave in order.
            results.extend(await asyncio.gather(*(_one(bus, c, window) for c in group)))
        sys.stdout.write(json.dumps(results) + "\n")
        sys.stdout.flush()
    bus.disconnect()


if __name__ == "__main__":
    asyncio.run(_main())
