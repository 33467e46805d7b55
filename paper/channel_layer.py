"""The channel layer in services mode: channels_redis's pub/sub layer, with consumer channels
that live in their process.

Our sockets only listen to groups (a run's frames); nothing sends to one consumer's own channel.
Upstream subscribes every consumer's channel in Redis when the socket opens: one Redis round
trip and one subscription per socket, and a socket that opens while Redis is down fails with an
HTTP 500 before the consumer's code runs. Here a new channel is a queue in the process, so a
socket can open without Redis, and `PaperFramesConsumer` serves it from the ledger until it can
join its run's group.

The cost: `channel_layer.send()` to a consumer's channel from another process is not delivered.
Nothing in the project does that; group messages (`group_send`) reach every subscriber as before.
"""
from __future__ import annotations

import asyncio
import uuid

from channels_redis.pubsub import RedisPubSubChannelLayer


class FramesChannelLayer(RedisPubSubChannelLayer):
    async def new_channel(self, prefix: str = "specific.") -> str:
        layer = self._get_layer()
        channel = f"{layer.prefix}{prefix}{uuid.uuid4().hex}"
        layer.channels[channel] = asyncio.Queue()
        return channel
