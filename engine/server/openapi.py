"""The OpenAPI 3.1 document of the server's API, served at `/openapi.json`, generated.

Nothing here is written by hand but prose: the paths, parameters and answers come from the
route table (`routes.ROUTES`), and every schema from the pydantic models of `models.py`
(`model_json_schema` with `ref_template` pointing into `components/schemas`, so a model used by
several routes is described once). Response schemas are taken in pydantic's "serialization"
mode (what handlers send), query parameters in "validation" mode (what they accept).
"""

from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel

from engine.server.routes import PATH_PARAMETERS, ROUTES, Route, answers, path_parameters

REF = "#/components/schemas/{model}"


class _Components:
    """`components/schemas`, filled as models are referred to."""

    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {}

    def schema(self, model: type[BaseModel], mode: str) -> dict[str, Any]:
        schema = model.model_json_schema(ref_template=REF, mode=mode)  # type: ignore[arg-type]
        self.schemas.update(schema.pop("$defs", {}))
        return schema

    def ref(self, model: type[BaseModel]) -> dict[str, str]:
        if model.__name__ not in self.schemas:
            self.schemas[model.__name__] = self.schema(model, "serialization")
        return {"$ref": REF.format(model=model.__name__)}


def _operation(route: Route, components: _Components) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": route.summary, "operationId": route.handler}
    params: list[dict[str, Any]] = []
    for name in path_parameters(route):
        description = PATH_PARAMETERS.get(name, ("", ""))[0]
        params.append({"name": name, "in": "path", "required": True, "schema": {"type": "string"},
                       **({"description": description} if description else {})})
    if route.query is not None:
        schema = components.schema(route.query, "validation")
        required = set(schema.get("required", ()))
        for name, prop in schema.get("properties", {}).items():
            description = prop.pop("description", None)
            prop.pop("title", None)
            # An optional parameter is absent, never null: `X | None` is documented as X.
            options = [o for o in prop.pop("anyOf", ()) if o != {"type": "null"}]
            if options:
                prop.update(options[0] if len(options) == 1 else {"anyOf": options})
                if prop.get("default", 0) is None:
                    del prop["default"]
            params.append({"name": name, "in": "query", "required": name in required, "schema": prop,
                           **({"description": description} if description else {})})
    for header in route.headers:
        params.append({"name": header.name, "in": "header", "required": False,
                       "schema": {"type": "string"}, "description": header.description})
    if params:
        op["parameters"] = params
    if route.body:
        op["requestBody"] = {"required": route.body_required,
                             "content": {media: {"schema": schema if isinstance(schema, dict) else components.ref(schema)}
                                         for media, schema in route.body},
                             **({"description": route.body_description} if route.body_description else {})}
    responses: dict[str, Any] = {}
    for answer in answers(route):
        out: dict[str, Any] = {"description": answer.description}
        if answer.model is not None:
            out["content"] = {"application/json": {"schema": components.ref(answer.model)}}
        elif answer.content:
            out["content"] = {media: {"schema": schema} for media, schema in answer.content}
        responses[str(answer.status)] = out
    op["responses"] = responses
    if route.auth == "none":
        op["security"] = []
    elif route.auth == "allowed":
        op["security"] = [{"bearer": []}, {}]
    return op


@functools.lru_cache(maxsize=1)
def _document() -> dict[str, Any]:
    components = _Components()
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        if route.documented:
            paths.setdefault(route.template, {})[route.method.lower()] = _operation(route, components)
    return {
        "openapi": "3.1.0",
        "info": {"title": "engine control plane", "version": "1",
                 "description": "Deploy applications, start runs over HTTP, watch their call graphs."},
        "components": {"schemas": dict(sorted(components.schemas.items())), "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer",
                       "description": "required when the server runs with --token / ENGINE_TOKEN"}}},
        "security": [{"bearer": []}],
        "paths": paths,
    }


def openapi_document() -> dict[str, Any]:
    """The document (built once per process: the routes and models do not change)."""
    return _document()
