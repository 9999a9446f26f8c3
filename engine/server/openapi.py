"""The OpenAPI 3.1 document of the server's API, served at `/openapi.json`.

Written by hand beside the routes (`api.py`); `tests/integration/test_server.py` checks that
every route is documented here and that nothing documented is missing from the server.
"""

from __future__ import annotations

from typing import Any

RUN_STATUS = ["queued", "running", "succeeded", "failed", "cancelled"]
CALL_STATUS = ["pending", "queued", "running", "tail", "succeeded", "failed", "cancelled"]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


RUN_ID = {"name": "run_id", "in": "path", "required": True, "schema": {"type": "string"}}
NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"},
        "description": "the application's name (its function's name)"}


def openapi_document() -> dict[str, Any]:
    num = {"type": ["number", "null"]}
    schemas: dict[str, Any] = {
        "Error": {"type": "object", "required": ["error", "status"], "properties": {
            "error": {"type": "string", "description": "one line: what is wrong and what to do"},
            "status": {"type": "integer"}}},
        "Accepted": {"type": "object", "required": ["run_id", "status"], "properties": {
            "run_id": {"type": "string"}, "status": {"type": "string", "enum": RUN_STATUS},
            "replayed": {"type": "boolean", "description": "true when an Idempotency-Key matched an existing run"}}},
        "Failure": {"type": ["object", "null"], "properties": {
            "kind": {"type": "string", "enum": ["function_error", "request_error", "timeout", "out_of_memory",
                                                "executor_lost", "dependency_failed", "cancelled", "internal"]},
            "type": {"type": ["string", "null"]}, "message": {"type": "string"},
            "function": {"type": ["string", "null"]}, "call_id": {"type": ["string", "null"]},
            "traceback": {"type": ["string", "null"]}}},
        "RunSummary": {"type": "object", "properties": {
            "run_id": {"type": "string"}, "application": {"type": "string"},
            "version": {"type": ["integer", "null"]}, "status": {"type": "string", "enum": RUN_STATUS},
            "created_at": {"type": "number", "description": "accepted, unix seconds"},
            "started_at": num, "ended_at": num, "queued_seconds": num, "duration": num,
            "resumes": {"type": "integer"},
            "owner": {"type": ["string", "null"],
                      "description": "the process driving the run under its lease (its owner id), if any"}}},
        "Run": {"allOf": [_ref("RunSummary"), {"type": "object", "properties": {
            "result": {"description": "the application's return value as JSON (succeeded runs); null "
                                      "when it is a File (see result_file)"},
            "result_file": {"type": "object", "description": (
                "present when the application returned a File: its bytes are at `url` "
                "(GET /v1/runs/{run_id}/output), with its content type"), "properties": {
                    "content_type": {"type": "string"}, "size": {"type": "integer"},
                    "url": {"type": "string"}}},
            "error": _ref("Failure"),
            "calls": {"type": "object", "description": "calls by status, plus total and executions",
                      "additionalProperties": {"type": "integer"}}}}]},
        "Node": {"type": "object", "properties": {
            "id": {"type": "string"}, "function": {"type": "string"},
            "kind": {"type": "string", "enum": ["call", "map", "reduce"]},
            "status": {"type": "string", "enum": CALL_STATUS}, "attempts": {"type": "integer"},
            "executions": {"type": "integer"}, "start": num, "end": num, "duration": num,
            "parent": {"type": ["string", "null"]}, "error": {"type": ["string", "null"]},
            "error_kind": {"type": ["string", "null"]}}},
        "Edge": {"type": "object", "properties": {
            "from": {"type": "string"}, "to": {"type": "string"},
            "kind": {"type": "string", "enum": ["parent", "dependency", "tail"]}}},
        "Dag": {"type": "object", "properties": {
            "run": _ref("RunSummary"), "root": {"type": "string"},
            "nodes": {"type": "array", "items": _ref("Node")},
            "edges": {"type": "array", "items": _ref("Edge")}}},
        "Application": {"type": "object", "properties": {
            "name": {"type": "string"}, "version": {"type": "integer"},
            "versions": {"type": "array", "items": {"type": "integer"}}, "digest": {"type": "string"},
            "file": {"type": "string"}, "deployed_at": {"type": "number"},
            "description": {"type": ["string", "null"]},
            "parameters": {"type": "array", "items": {"type": "object", "properties": {
                "name": {"type": "string"}, "type": {"type": ["string", "null"]},
                "required": {"type": "boolean"}}}}}},
    }
    run_ref = {"parameters": [RUN_ID]}
    paths: dict[str, Any] = {
        "/v1/deployments": {"post": {
            "summary": "Deploy the applications a file defines (what `engine deploy` sends)",
            "parameters": [{"name": "file", "in": "query", "required": True, "schema": {"type": "string"},
                            "description": "path of the application file inside the archive"}],
            "requestBody": {"required": True, "content": {"application/zip": {
                "schema": {"type": "string", "format": "binary"}}}},
            "responses": {
                "201": _json({"type": "object", "properties": {"applications": {"type": "array", "items": {
                    "allOf": [_ref("Application"), {"type": "object", "properties": {"new": {"type": "boolean"}}}]}}}},
                    "deployed; a new version of every application whose code changed"),
                "200": {"description": "the code is identical to the latest version: nothing new"},
                "400": _error("not a zip archive, or no such file in it"),
                "422": _error("the code does not import, or defines no @application()")}}},
        "/v1/applications": {"get": {
            "summary": "Deployed applications, latest version of each",
            "responses": {"200": _json({"type": "object", "properties": {
                "applications": {"type": "array", "items": _ref("Application")}}}, "the applications")}}},
        "/v1/applications/{name}": {"parameters": [NAME], "get": {
            "summary": "One application",
            "responses": {"200": _json(_ref("Application"), "the application"),
                          "404": _error("no such application")}}},
        "/v1/applications/{name}/runs": {"parameters": [NAME], "post": {
            "summary": "Start a run: accepted at once and queued durably; never refused for lack of capacity. "
                       "No token needed for an application with allow=[\"unauthenticated_requests\"]",
            "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                            "schema": {"type": "string"},
                            "description": "a retried POST with the same key returns the same run"}],
            "requestBody": {"required": False, "description": (
                "the application's input as JSON: the value of its one parameter, or an object "
                "of its parameters. An application with a parameter annotated File (or HttpBody) "
                "takes the raw body as that argument, with the request's Content-Type, or "
                "multipart/form-data: one part per parameter, named after it (File parameters "
                "take the part's bytes and content type, the others its JSON)"), "content": {
                    "application/json": {"schema": {}},
                    "multipart/form-data": {"schema": {"type": "object", "additionalProperties": {}}},
                    "*/*": {"schema": {"type": "string", "format": "binary"}}}},
            "responses": {"202": _json(_ref("Accepted"), "accepted and queued"),
                          "400": _error("the body is not valid JSON (or not parseable multipart)"),
                          "404": _error("no such application"),
                          "409": _error("the Idempotency-Key was used for another application"),
                          "415": _error("a raw body for an application that takes JSON (no File "
                                        "parameter), or one that needs other input too (send multipart)"),
                          "422": _error("the input does not match the type hints; the message names the field")}}},
        "/v1/runs": {"get": {
            "summary": "Runs, newest first",
            "parameters": [
                {"name": "application", "in": "query", "schema": {"type": "string"}},
                {"name": "status", "in": "query", "schema": {"type": "string", "enum": RUN_STATUS}},
                {"name": "limit", "in": "query", "schema": {"type": "integer", "default": 100, "maximum": 10000}}],
            "responses": {"200": _json({"type": "object", "properties": {
                "runs": {"type": "array", "items": _ref("RunSummary")},
                "total": {"type": "integer", "description": "runs matching the filters"}}}, "the runs")}}},
        "/v1/runs/{run_id}": {**run_ref, "get": {
            "summary": "A run: status, result, error, timings and call counts",
            "responses": {"200": _json(_ref("Run"), "the run"), "404": _error("no such run")}}},
        "/v1/runs/{run_id}/dag": {**run_ref, "get": {
            "summary": "The run's call graph: every call a node; parent, dependency and tail-call edges",
            "responses": {"200": _json(_ref("Dag"), "the graph"), "404": _error("no such run")}}},
        "/v1/runs/{run_id}/events": {**run_ref, "get": {
            "summary": "Server-sent events: `call` (a Node) and `run` (a RunSummary) on every change, "
                       "the current state first, then `end` when the run is finished",
            "responses": {"200": {"description": "the event stream",
                                  "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                          "404": _error("no such run")}}},
        "/v1/runs/{run_id}/logs": {**run_ref, "get": {
            "summary": "What the run's calls printed",
            "parameters": [{"name": "call", "in": "query", "schema": {"type": "string"}},
                           {"name": "function", "in": "query", "schema": {"type": "string"}}],
            "responses": {"200": _json({"type": "object", "properties": {"logs": {"type": "array", "items": {
                "type": "object", "properties": {"call_id": {"type": "string"}, "function": {"type": "string"},
                                                 "attempt": {"type": "integer"}, "text": {"type": "string"}}}}}},
                "the log entries, oldest first"), "404": _error("no such run")}}},
        "/v1/runs/{run_id}/output": {**run_ref, "get": {
            "summary": "A succeeded run's result: a File's bytes with its Content-Type, any other value as JSON. "
                       "No token needed for an application with allow=[\"unauthenticated_requests\"]",
            "responses": {"200": {"description": "the result", "content": {
                              "application/json": {"schema": {}},
                              "*/*": {"schema": {"type": "string", "format": "binary"}}}},
                          "404": _error("no such run"),
                          "409": _error("the run has not succeeded (yet): no output"),
                          "500": _error("the result cannot be decoded on this server")}}},
        "/v1/runs/{run_id}/cancel": {**run_ref, "post": {
            "summary": "Cancel a queued or running run: its calls stop and its executors are stopped",
            "responses": {"200": _json(_ref("Accepted"), "cancelled"), "404": _error("no such run"),
                          "409": _error("the run is already finished")}}},
        "/v1/runs/{run_id}/resume": {**run_ref, "post": {
            "summary": "Queue a failed or cancelled run again; finished calls are reused, only the rest run",
            "responses": {"202": _json(_ref("Accepted"), "queued again"), "404": _error("no such run"),
                          "409": _error("the run is not failed or cancelled")}}},
        "/metrics": {"get": {
            "summary": "Prometheus metrics",
            "responses": {"200": {"description": "text exposition format 0.0.4",
                                  "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
        "/healthz": {"get": {"summary": "Liveness", "security": [],
                             "responses": {"200": {"description": "the server is up"}}}},
        "/openapi.json": {"get": {"summary": "This document", "security": [],
                                  "responses": {"200": {"description": "OpenAPI 3.1"}}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "engine control plane", "version": "1",
                 "description": "Deploy applications, start runs over HTTP, watch their call graphs."},
        "components": {"schemas": schemas, "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer",
                       "description": "required when the server runs with --token / ENGINE_TOKEN"}}},
        "security": [{"bearer": []}],
        "paths": paths,
    }
