"""The API's documentation: ``/openapi.json`` and Swagger UI at ``/docs``, both public.

quart-schema builds the document from the routes' models; what it cannot say is added here, once
per app: the event streams' media type and events, empty ``204`` answers, and who may call what.
Swagger UI's files come with the ``swagger-ui-py`` package: nothing loads from a CDN, so the page
works offline and under the dashboard's Content-Security-Policy.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST
from quart import Blueprint, Response, current_app, send_from_directory
from quart_schema import hide
from werkzeug.exceptions import NotFound

from ..tasks import Task
from . import auth, models
from .metrics import MetricsText
from .responses import PAGE_HEADERS, json_response
from .runtime import runtime

SWAGGER_UI = Path(str(files("swagger_ui") / "static"))  # found, not imported: files only
SWAGGER_FILES = frozenset({"swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png"})
PAGES = Path(__file__).resolve().parent.parent / "static"
SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "CONVEYOR_TOKEN"},
    "streamToken": {
        "type": "apiKey", "in": "query", "name": "token",
        "description": "a token from POST /stream-token (streams only)",
    },
}  # fmt: skip
EVENTS: dict[str, type[models.Model]] = {  # event type → the model of its data
    "state": models.StateEvent,
    "progress": models.ProgressEvent,
    "log": models.LogEvent,
    "pruned": models.PrunedEvent,
}
_DOCUMENT = "conveyor.openapi"

docs = Blueprint("docs", __name__)


@docs.get("/openapi.json")
@auth.public
@hide
async def openapi() -> Response:
    document = current_app.extensions.get(_DOCUMENT)
    if document is None:  # the routes do not change once the app serves: build it once
        document = current_app.extensions[_DOCUMENT] = openapi_document()
    return json_response(document)


@docs.get("/docs")
@auth.public
@hide
async def swagger_page() -> Response:
    response = await send_from_directory(PAGES, "docs.html")
    response.headers.update(PAGE_HEADERS)
    return response


@docs.get("/docs/files/<name>")
@auth.public
@hide
async def swagger_files(name: str) -> Response:
    if name not in SWAGGER_FILES:
        raise NotFound
    return await send_from_directory(SWAGGER_UI, name)


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document of every route."""
    document: dict[str, Any] = current_app.extensions["QUART_SCHEMA"].openapi_provider.schema()
    components = document["components"]
    components["securitySchemes"] = SECURITY_SCHEMES
    document["security"] = [{"bearer": []}]
    for model in EVENTS.values():
        schema = model.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
        components["schemas"].update(schema.pop("$defs", {}))
        components["schemas"][model.__name__] = schema
    error = {"$ref": f"#/components/schemas/{models.Error.__name__}"}
    for operations in document["paths"].values():
        for method, operation in operations.items():
            _answers(operation, components["schemas"])
            if method != "get" and operation["operationId"] not in READING_POSTS:
                forbidden = {
                    "description": "a read token: this needs a write token",
                    "content": {"application/json": {"schema": error}},
                }
                operation["responses"] = dict(
                    sorted({**operation["responses"], "403": forbidden}.items())
                )
            # quart-schema names an operation "<method>_<function>": the function's name will do
            operation["operationId"] = operation["operationId"].split("_", 1)[1]
    components["schemas"].pop(models.EventStream.__name__, None)
    components["schemas"].pop(models.Empty.__name__, None)
    components["schemas"].pop(MetricsText.__name__, None)
    _link(document)
    rt = runtime()
    _example(document, rt.scheduler.tasks, rt.settings.tasks)
    return document


def _answers(operation: dict[str, Any], schemas: dict[str, Any]) -> None:
    """What quart-schema cannot say of an operation's answers: an empty 204, an event stream."""
    # quart-schema keys them by number; JSON (and the spec) by text
    responses = operation["responses"] = {
        str(status): answer for status, answer in sorted(operation["responses"].items())
    }
    if "204" in responses:
        responses["204"] = {"description": "No content"}
    for answer in responses.values():
        _share(answer.get("content", {}).get("application/json"), schemas)
    ok = responses.get("200", {}).get("content", {}).get("application/json", {})
    ref = ok.get("schema", {}).get("$ref", "")
    if ref == f"#/components/schemas/{models.EventStream.__name__}":
        responses["200"] = _stream_response()
    elif ref == f"#/components/schemas/{MetricsText.__name__}":
        responses["200"] = {
            "description": MetricsText.__doc__ or "",
            "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}},
        }


# operations that change nothing although they are not GETs (auth.reads)
READING_POSTS = frozenset({"post_stream_token"})

# where the id in an answer leads (path, method → the id's parameter, the operations that take
# it): a client, or schemathesis's stateful phase, calls them next
LINKS = {
    ("/jobs", "post"): ("job_id", ("get_job", "job_logs", "job_events", "cancel", "retry")),
    ("/schedules", "post"): (
        "schedule_id",
        ("get_schedule", "pause_schedule", "resume_schedule", "delete_schedule"),
    ),
}


def _link(document: dict[str, Any]) -> None:
    known = {op["operationId"] for ops in document["paths"].values() for op in ops.values()}
    for (path, method), (parameter, targets) in LINKS.items():
        links = {
            target: {"operationId": target, "parameters": {parameter: "$response.body#/id"}}
            for target in targets
            if target in known
        }
        for status, answer in document["paths"][path][method]["responses"].items():
            if status.startswith("2"):
                answer["links"] = links


def _example(document: dict[str, Any], tasks: dict[str, Task], modules: tuple[str, ...]) -> None:
    """A submit's example body names a task of the service's own modules (CONVEYOR_TASKS) that
    takes no arguments, so that "Try it out" runs as it is."""
    runnable = [
        t
        for t in sorted(tasks.values(), key=lambda t: t.name)
        if t.fn.__module__ in modules and not _needs_arguments(t)
    ]
    if not runnable:
        return
    body = {"task": runnable[0].name, "args": [], "kwargs": {}}
    for path, extra in (("/jobs", {}), ("/schedules", {"cron": "*/5 * * * *"})):
        content = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        content["example"] = {**body, **extra}


def _needs_arguments(task: Task) -> bool:
    try:
        task.signature.bind()
    except TypeError:
        return True
    return False


def _share(content: dict[str, Any] | None, schemas: dict[str, Any]) -> None:
    """An answer's model once, in components, and a reference to it in each answer that has
    it: the error body alone is in every operation."""
    if content is None:
        return
    schema = content.get("schema")
    if schema is None or "title" not in schema or "properties" not in schema:
        return
    schemas.setdefault(schema["title"], schema)
    content["schema"] = {"$ref": f"#/components/schemas/{schema['title']}"}


def _stream_response() -> dict[str, Any]:
    events = ", ".join(f"`{kind}` ({model.__name__})" for kind, model in EVENTS.items())
    return {
        "description": (
            "Server-Sent Events: each message has an `id:` (sent back as Last-Event-ID, it "
            f"resumes the stream), an `event:` type and one line of JSON `data:`. Types: {events}; "
            "their data is described in components/schemas. Comment lines keep it alive."
        ),
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
