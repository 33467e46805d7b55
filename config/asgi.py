"""ASGI entry point served by daphne: Django over HTTP, the frame sockets over WebSocket.

Sockets need an authenticated user (session or token) and an allowed Origin.
"""
import os
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.http import FileResponse
from django.urls import set_script_prefix

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")


class SyncASGIHandler(ASGIHandler):
    """Django's ASGI handler for a site whose middleware and views are all synchronous (ours).

    Two costs of Django's own handler go, measured per request by bench/load.py:
    - It builds an async middleware chain, so with synchronous middleware and views a request
      crosses between the event loop and its thread three more times than it needs to
      (middleware, async_to_sync back to the loop to resolve the URL, sync_to_async to the
      thread for the view, and back). Here middleware and view run in one call, as under WSGI.
    - It starts a new thread for every request (a ThreadSensitiveContext with its own
      executor). Here a request borrows an idle one-thread executor and gives it back after:
      the same guarantee (everything synchronous in a request runs on one thread, its database
      connection included), without a thread start and stop per request. (A view still running
      when its client went away keeps its thread busy: the next request that borrows it waits.)
    - It sends request_started, runs the view and sends request_finished in three hops to the
      request's thread. Here they are one (`_respond`): a response in memory, or a synchronous
      stream read into memory (as Django's handler does too), is closed (request_finished: the
      database connection goes back to the pool) before its bytes are sent. An asynchronous
      stream is closed after it is sent, as Django does.
      Each hop is a wait for the GIL behind the event loop, which under load was most of a
      read's latency.
    """

    def __init__(self):
        super().__init__()
        self._idle: list[ThreadPoolExecutor] = []

    def load_middleware(self, is_async=False):
        super().load_middleware(is_async=False)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        executor = self._idle.pop() if self._idle else ThreadPoolExecutor(1, thread_name_prefix="request")
        try:
            async with ThreadSensitiveContext(executor=executor):
                await self.handle(scope, receive, send)
        finally:
            self._idle.append(executor)

    async def handle(self, scope, receive, send):
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(get_script_prefix(scope))
        response = closed = None
        try:
            response, closed = await sync_to_async(self._respond, thread_sensitive=True)(scope, body_file)
            await self.send_response(response, send)
        finally:
            if response is not None and not closed:
                await sync_to_async(response.close, thread_sensitive=True)()
            body_file.close()

    def _respond(self, scope, body_file) -> tuple:
        """In the request's thread: request_started, the response, and unless it streams from
        an asynchronous source, request_finished too. Returns (response, closed)."""
        signals.request_started.send(sender=self.__class__, scope=scope)
        request, error_response = self.create_request(scope, body_file)
        response = error_response if request is None else self.get_response(request)
        response._handler_class = self.__class__
        if response.streaming and response.is_async:
            return response, False  # an asynchronous stream: closed after its last chunk is sent
        if response.streaming:
            # A synchronous stream (a static file, an artifact download): Django's handler
            # reads it all into memory anyway, in a hop of its own and with a warning. Read it
            # here, in this hop, and hand the loop the chunks.
            if isinstance(response, FileResponse):
                response.block_size = self.chunk_size  # larger reads, fewer chunks
            response.streaming_content = _replay(list(response.streaming_content))
        response.close()
        return response, True

    async def get_response_async(self, request):
        return await sync_to_async(self.get_response, thread_sensitive=True)(request)


async def _replay(chunks: list[bytes]):
    for chunk in chunks:
        yield chunk


def _django_asgi():
    import django

    django.setup(set_prefix=False)
    return SyncASGIHandler()


django_asgi = _django_asgi()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from config.wsauth import SessionOrTokenAuth  # noqa: E402
from paper.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi,
        "websocket": SessionOrTokenAuth(URLRouter(websocket_urlpatterns)),
    }
)
