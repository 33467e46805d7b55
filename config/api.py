"""The one REST API: its auth, its JSON body parser, its pagination and its error contract.

Every error leaves as JSON `{"code", "detail", "errors"?}`; the app routers mount in config/urls.py.
"""
import copy
import json
import logging
import math
from datetime import date
from functools import wraps
from typing import Annotated, Any

import pydantic_core
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import OperationalError
from django.db.models import IntegerField, QuerySet, Subquery
from django.db.models.expressions import RawSQL
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, JsonResponse
from django.urls import URLPattern
from django.views.defaults import page_not_found
from ninja import Field, NinjaAPI, Schema
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.openapi.docs import Swagger
from ninja.pagination import LimitOffsetPagination
from ninja.parser import Parser
from ninja.renderers import JSONRenderer
from ninja.responses import NinjaJSONEncoder
from pydantic import BaseModel, BeforeValidator, ConfigDict, Strict

from config.auth import API_AUTH
from config.errors import AppError
from ledger.selectors import Counted

# Request schemas refuse what they do not know and numbers that are not numbers.
STRICT_INPUT = ConfigDict(extra="forbid", allow_inf_nan=False)

# Body numbers as JSON (Schema) types them: an integer field takes 7 and 7.0 (the same number in
# JSON) and refuses 7.5, "7" and true; a number field takes 7 and 7.5 and refuses "7.5" and true.
# Query parameters arrive as text and stay lax.


def _json_integer(value):
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return value


def JsonInt(**bounds):  # noqa: N802 (a type)
    """An integer field as JSON Schema means it, with its bounds (`ge=0, le=10`). The bounds sit
    inside the type: given to the field, next to a before-validator, pydantic would publish them
    as "ge"/"le" instead of "minimum"/"maximum"."""
    return Annotated[int, Strict(), Field(**bounds), BeforeValidator(_json_integer)]


StrictFloat = Annotated[float, Strict()]

DATE_MIN, DATE_MAX = date(1970, 1, 1), date(2099, 12, 31)
DATE_PATTERN = r"^(19[7-9][0-9]|20[0-9][0-9])-[0-9]{2}-[0-9]{2}$"


def _iso_date(value):
    """A date is a "YYYY-MM-DD" string from 1970 to 2099 (not a timestamp, not a datetime)."""
    if isinstance(value, date):
        return value
    if not isinstance(value, str):
        raise ValueError("must be a date string YYYY-MM-DD")
    try:
        parsed = date.fromisoformat(value) if len(value) == 10 else None
    except ValueError:
        parsed = None
    if parsed is None:
        raise ValueError(f"{value!r} is not a date YYYY-MM-DD")
    if not DATE_MIN <= parsed <= DATE_MAX:
        raise ValueError(f"must be from {DATE_MIN} to {DATE_MAX}")
    return parsed


ApiDate = Annotated[
    date,
    BeforeValidator(_iso_date),
    Field(json_schema_extra={"pattern": DATE_PATTERN}, description=f"YYYY-MM-DD, {DATE_MIN} to {DATE_MAX}"),
]

PAGE_DEFAULT = 100
PAGE_MAX = 1000


class Out(BaseModel):
    """A response body that pydantic-core reads from an object's attributes by itself.

    ninja's Schema wraps every object it reads in a Python getter (DjangoGetter), field by field:
    validating a page of 100 fills that way took ~1.4 ms, against ~0.1 ms here. Out suits rows
    whose fields are attributes (properties included); a value from elsewhere is set on the
    object by its selector (ledger.selectors.run_detail) rather than by a resolve_ method.
    """

    model_config = ConfigDict(from_attributes=True)


class ErrorOut(Schema):
    code: str = Field(description="a stable machine-readable reason, e.g. invalid_input, not_found, gate_refused")
    detail: str = Field(description="the reason in words")
    errors: list | dict | None = Field(None, description="per-field errors, or details of the refusal")


# What each error status means in this API; every operation documents the ones it can return.
ERROR_STATUSES = {
    400: "malformed_json: the body is not JSON (or not UTF-8)",
    401: "not_authenticated: no, unknown or revoked token (or an inactive user), and no session",
    403: ("forbidden: a session request without its CSRF token, or an action the user may not take (another "
          "operator's bot or session: only its owner or staff may change, start or stop it)"),
    404: "not_found: no such object (or no such URL)",
    405: "method_not_allowed: the path exists, the method does not",
    409: "a conflict with the current state (a name in use, the paper gate, rows that depend on it)",
    413: "payload_too_large: the body is larger than the server takes (DATA_UPLOAD_MAX_MEMORY_SIZE)",
    422: "invalid_input (or a service's code): the request is well-formed JSON that is not acceptable",
    423: "kill_switch_latched: new sessions are refused until the kill switch is re-armed",
    503: ("database_unavailable: the database is down or busy; retry shortly (halt_incomplete: a halt's latch or "
          "stops could not all be written; the stops that could be sent went out)"),
}
# Every operation can answer these: bad credentials, and a database that is down.
ALWAYS = (401, 503)


def responses(ok: Any, *errors: int, status: int = 200) -> dict[int, Any]:
    """An operation's documented answers: `ok` under `status` (or a {status: schema} dict), the
    errors every operation can give (ALWAYS), and `errors`, each with the ErrorOut body."""
    documented = dict(ok) if isinstance(ok, dict) else {status: ok}
    for code in sorted({*ALWAYS, *errors}):
        if code not in ERROR_STATUSES:
            raise ValueError(f"undocumented error status {code}")
        documented[code] = ErrorOut
    return documented


# The error statuses of a request body (not JSON, too large, or refused by its schema) and of a
# session-authenticated unsafe request (CSRF).
BODY = (400, 413, 422)
CSRF = 403
# An operation that changes, starts or stops a bot or session someone else owns (bots/permissions.py).
FORBIDDEN = 403


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


class JsonRenderer(JSONRenderer):
    """Response bodies encoded by pydantic-core (Rust) rather than the json module.

    The same JSON but for two things: timestamps keep their microseconds (the ledger's precision;
    Django's encoder cut them to milliseconds) and a NaN or infinity is null (json.dumps wrote
    NaN, which is not JSON). What pydantic-core does not know (Decimal, lazy strings) goes to
    ninja's encoder. A page of 100 rows encodes in ~0.1 ms instead of ~1.4 ms.
    """

    def render(self, request: HttpRequest, data: Any, *, response_status: int) -> bytes:
        return pydantic_core.to_json(data, inf_nan_mode="null", fallback=_ENCODER.default)


_ENCODER = NinjaJSONEncoder()


PAGE_OFFSET_MAX = 10**12


class Page(LimitOffsetPagination):
    """?limit= (1..1000, default 100) and ?offset=; the body is {items, count}."""

    class Input(Schema):
        limit: int = Field(PAGE_DEFAULT, ge=1, le=PAGE_MAX)
        # Bounded: an offset beyond a 64-bit integer reached SQLite as "datatype mismatch" (a 500).
        offset: int = Field(0, ge=0, le=PAGE_OFFSET_MAX)

    def __init__(self, **kwargs):
        super().__init__(max_limit=PAGE_MAX, **kwargs)

    def paginate_queryset(self, queryset, pagination: Input, request: HttpRequest, **params):
        """The page and its count in one query: the count is a scalar subquery of the page's
        SELECT, so a page costs one round trip, not two, and the count and the rows are read in
        one snapshot. Only a page with no row (past the end, or nothing to page) asks its count
        alone. A Counted (ledger.selectors) brings a cheaper count query than COUNT(*) over its
        rows, and what to raise when that query finds nothing."""
        if isinstance(queryset, Counted):
            rows, count, missing = queryset.rows, queryset.count, queryset.missing
        elif _foldable(queryset):
            rows, count, missing = queryset, queryset.order_by().values_list(_COUNT_ALL, flat=True), None
        else:
            return super().paginate_queryset(queryset, pagination, request, **params)
        offset = pagination.offset
        items = list(rows.annotate(**{PAGE_COUNT: Subquery(count)})[offset:offset + min(pagination.limit,
                                                                                            self.max_limit)])
        if items:
            total = [_pop_count(item) for item in items][0]
        else:
            total = next(iter(count), None)
            if total is None:
                if missing is not None:
                    raise missing
                total = 0  # a filter no row can match (Django folds it away): an empty page
        return {"items": items, "count": total}


PAGE_COUNT = "_page_count"
# A plain COUNT(*) over the rows, as an expression that is not an aggregate to Django (which would
# otherwise GROUP BY a values() queryset's fields).
_COUNT_ALL = RawSQL("COUNT(*)", (), output_field=IntegerField())


def _foldable(queryset) -> bool:
    """A queryset whose rows COUNT(*) counts as they are: not sliced, distinct, grouped or combined."""
    if not isinstance(queryset, QuerySet):
        return False
    query = queryset.query
    return not (query.is_sliced or query.distinct or query.group_by is not None or query.combinator
                or any(getattr(e, "contains_aggregate", False) for e in query.annotations.values()))


def _pop_count(item) -> int:
    return item.pop(PAGE_COUNT) if isinstance(item, dict) else item.__dict__.pop(PAGE_COUNT)


log = logging.getLogger(__name__)


def _json_405(view):
    """ninja answers a method a path does not have with a plain-text 405: make it our JSON body."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs):
        response = view(request, *args, **kwargs)
        if isinstance(response, HttpResponseNotAllowed):
            allowed = response["Allow"]
            body = {"code": "method_not_allowed",
                    "detail": f"{request.method} is not allowed on {request.path}; allowed: {allowed}"}
            response = JsonResponse(body, status=405)
            response["Allow"] = allowed
        return response

    return wrapper


class PaperTradingAPI(NinjaAPI):
    """NinjaAPI with our JSON 405, and each error status described in the schema as ERROR_STATUSES says."""

    def get_openapi_schema(self, *, path_prefix=None, path_params=None):
        """Built once per process and path prefix (building it took ~170 ms of CPU per request)."""
        if path_prefix is None:
            path_prefix = self.get_root_path(path_params or {})
        cache = self.__dict__.setdefault("_openapi_schemas", {})
        if path_prefix not in cache:
            schema = super().get_openapi_schema(path_prefix=path_prefix)
            for methods in schema["paths"].values():
                for operation in methods.values():
                    for code, answer in operation.get("responses", {}).items():
                        if int(code) in ERROR_STATUSES:
                            answer["description"] = ERROR_STATUSES[int(code)]
            cache[path_prefix] = schema
        return copy.deepcopy(cache[path_prefix])

    def _get_urls(self):
        urls = super()._get_urls()
        for pattern in urls:
            if isinstance(pattern, URLPattern):
                pattern.callback = _json_405(pattern.callback)
        return urls


class VendoredSwagger(Swagger):
    """ninja's Swagger page with Swagger UI from static/vendor/swagger-ui/ (vendored from npm's
    swagger-ui-dist, see its README), so /docs works offline. ninja's own page loads it from a CDN
    unless "ninja" is in INSTALLED_APPS, and then from ninja's bundled copy, which is updated
    only with ninja; this keeps it with the other vendored front-end libraries. No inline script."""

    def render_page(self, request, api, **kwargs):
        from django.middleware.csrf import get_token
        from django.templatetags.static import static
        from django.utils.html import format_html, json_script
        from ninja.openapi.docs import _csrf_needed

        config = {**self.settings, "url": self.get_openapi_url(api, kwargs)}
        csrf = _csrf_needed(api)
        return HttpResponse(format_html(
            '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{}</title>'
            '<link rel="stylesheet" href="{}"></head>'
            '<body data-csrf-token="{}" data-api-csrf="{}">{}<div id="swagger-ui"></div>'
            '<script src="{}"></script><script src="{}"></script></body></html>',
            api.title, static("vendor/swagger-ui/swagger-ui.css"), get_token(request) if csrf else "",
            "true" if csrf else "", json_script(config, "swagger-settings"),
            static("vendor/swagger-ui/swagger-ui-bundle.js"), static("vendor/swagger-ui/init.js"),
        ))


api = PaperTradingAPI(
    title="Paper trading API",
    version="1",
    description=(
        "Bots, backtests, paper sessions, the ledger and the kill switch. Authenticate with "
        "`Authorization: Bearer <token>` (`manage.py create_api_token USER`), `X-API-Key`, "
        "or a browser session with its CSRF token."
    ),
    auth=API_AUTH,
    parser=JsonBodyParser(),
    renderer=JsonRenderer(),
    docs=VendoredSwagger(),
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


@api.exception_handler(RequestDataTooBig)
def _too_large(request: HttpRequest, exc: RequestDataTooBig) -> HttpResponse:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    body = {"code": "payload_too_large", "detail": f"the request body is too large: at most {limit} bytes"}
    return api.create_response(request, body, status=413)


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
