"""The one REST API: its auth, its JSON body parser, its pagination and its error contract.

Every error leaves as JSON `{"code", "detail", "errors"?}`; the app routers mount in config/urls.py.
"""
import json
import logging

from django.db import OperationalError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.defaults import page_not_found
from ninja import Field, NinjaAPI, Schema
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.pagination import LimitOffsetPagination
from ninja.parser import Parser
from pydantic import ConfigDict

from config.auth import API_AUTH
from config.errors import AppError

# Request schemas refuse what they do not know and numbers that are not numbers.
STRICT_INPUT = ConfigDict(extra="forbid", allow_inf_nan=False)

PAGE_DEFAULT = 100
PAGE_MAX = 1000


class ErrorOut(Schema):
    code: str
    detail: str
    errors: list | dict | None = None


class MalformedJSON(ValueError):
    """The request body is not JSON."""


class JsonBodyParser(Parser):
    """Reads every body as JSON, whatever its Content-Type.

    `curl -d '{...}'` sends application/x-www-form-urlencoded; the walkthrough's curl lines
    must work as written. NaN and Infinity parse here and are refused by the schema, which
    can name the field.
    """

    def parse_body(self, request: HttpRequest):
        try:
            return json.loads(request.body)
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
            raise MalformedJSON(f"the request body is not valid JSON: {exc}") from None
        except RecursionError:
            raise MalformedJSON("the request body is not valid JSON: nested too deeply") from None


PAGE_OFFSET_MAX = 10**12


class Page(LimitOffsetPagination):
    """?limit= (1..1000, default 100) and ?offset=; the body is {items, count}."""

    class Input(Schema):
        limit: int = Field(PAGE_DEFAULT, ge=1, le=PAGE_MAX)
        # Bounded: an offset beyond a 64-bit integer reached SQLite as "datatype mismatch" (a 500).
        offset: int = Field(0, ge=0, le=PAGE_OFFSET_MAX)

    def __init__(self, **kwargs):
        super().__init__(max_limit=PAGE_MAX, **kwargs)


log = logging.getLogger(__name__)

api = NinjaAPI(
    title="Paper trading API",
    version="1",
    description=(
        "Bots, backtests, paper sessions, the ledger and the kill switch. Authenticate with "
        "`Authorization: Bearer <token>` (`manage.py create_api_token USER`), `X-API-Key`, "
        "or a browser session with its CSRF token."
    ),
    auth=API_AUTH,
    parser=JsonBodyParser(),
)


def _field(loc: tuple | list) -> str:
    loc = [str(part) for part in loc]
    # A body is one schema parameter; its name is an implementation detail, not a field.
    if loc and loc[0] == "body":
        loc = ["body", *loc[2:]]
    return ".".join(loc)


@api.exception_handler(AppError)
def _app_error(request: HttpRequest, exc: AppError) -> HttpResponse:
    return api.create_response(request, exc.to_dict(), status=exc.status)


@api.exception_handler(ValidationError)
def _invalid_input(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    errors = [{"field": _field(e.get("loc", ())), "message": e.get("msg", "invalid")} for e in exc.errors]
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors) or "invalid input"
    body = {"code": "invalid_input", "detail": detail, "errors": errors}
    return api.create_response(request, body, status=422)


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    # ninja wraps a body the parser could not read in HttpError(400); the cause says why.
    if isinstance(exc.__cause__, MalformedJSON):
        body = {"code": "malformed_json", "detail": str(exc.__cause__)}
    elif isinstance(exc, AuthenticationError):
        body = {
            "code": "not_authenticated",
            "detail": "authentication required: send Authorization: Bearer <token>, X-API-Key, "
                      "or a session cookie",
        }
    elif exc.status_code == 403:
        body = {"code": "forbidden", "detail": str(exc)}
    else:
        body = {"code": f"http_{exc.status_code}", "detail": str(exc)}
    return api.create_response(request, body, status=exc.status_code)


@api.exception_handler(OperationalError)
def _database_unavailable(request: HttpRequest, exc: OperationalError) -> HttpResponse:
    # The database is down, restarting or busy: say so (503, retry later), never a traceback.
    log.warning("database unavailable for %s %s: %s", request.method, request.path, exc)
    body = {"code": "database_unavailable", "detail": f"the database is unavailable, retry shortly ({exc})"}
    return api.create_response(request, body, status=503)


@api.exception_handler(Http404)
def _not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return api.create_response(request, {"code": "not_found", "detail": str(exc) or "not found"}, status=404)


def url_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """handler404: an unknown URL gets the API's JSON error, the admin keeps its HTML page."""
    if request.path.startswith("/admin/"):
        return page_not_found(request, exception)
    detail = f"no such endpoint: {request.method} {request.path} (see /docs)"
    return JsonResponse({"code": "not_found", "detail": detail}, status=404)
