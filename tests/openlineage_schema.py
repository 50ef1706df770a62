"""The JSON Schema the lineage tests validate every OpenLineage event against.

`openlineage-python` 1.54 ships no JSON Schema files (only the classes generated from them, which name
the schema URLs), and the tests cannot reach openlineage.io. So this is the spec's RunEvent
(OpenLineage.json 2-0-2) and the facets Strata emits, written out from the published spec: the required
fields, their types and formats, and the base-facet rule that every facet names its `_producer` and
`_schemaURL`. Each facet is checked against its own definition, found by its key.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlparse

import jsonschema

STRING = {"type": "string"}
URI = {"type": "string", "format": "uri"}
DATE_TIME = {"type": "string", "format": "date-time"}
BASE_FACET = {
    "type": "object",
    "properties": {"_producer": URI, "_schemaURL": URI},
    "required": ["_producer", "_schemaURL"],
}


def facet(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"allOf": [BASE_FACET, {"type": "object", "properties": properties, "required": required}]}


def facets(known: dict[str, Any]) -> dict[str, Any]:
    """A facets map: the known facets by key; any other facet must still be a base facet."""
    return {"type": "object", "properties": known, "additionalProperties": BASE_FACET}


SCHEMA_FIELD = {
    "type": "object",
    "properties": {"name": STRING, "type": STRING, "description": STRING, "ordinal_position": {"type": "integer"}},
    "required": ["name"],
}
PARTITION_CONDITION = {
    "type": "object",
    "properties": {
        "type": {"const": "partition"},
        "partitions": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"dimensions": {"type": "object"}, "identifier": STRING},
                "required": ["dimensions"],
            },
        },
    },
    "required": ["type", "partitions"],
}
RUN_FACETS = facets(
    {
        "parent": facet(
            {
                "run": {
                    "type": "object",
                    "properties": {"runId": {"type": "string", "format": "uuid"}},
                    "required": ["runId"],
                },
                "job": {
                    "type": "object",
                    "properties": {"namespace": STRING, "name": STRING},
                    "required": ["namespace", "name"],
                },
            },
            ["run", "job"],
        ),
        "nominalTime": facet({"nominalStartTime": DATE_TIME, "nominalEndTime": DATE_TIME}, ["nominalStartTime"]),
        "errorMessage": facet({"message": STRING, "programmingLanguage": STRING}, ["message", "programmingLanguage"]),
        "processing_engine": facet({"version": STRING, "name": STRING}, ["version"]),
        "tags": facet(
            {
                "tags": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"key": STRING, "value": STRING, "source": STRING},
                        "required": ["key", "value"],
                    },
                }
            },
            [],
        ),
    }
)
JOB_FACETS = facets(
    {
        "sql": facet({"query": STRING, "dialect": STRING}, ["query"]),
        "jobType": facet(
            {"processingType": STRING, "integration": STRING, "jobType": STRING}, ["processingType", "integration"]
        ),
    }
)
DATASET = {
    "type": "object",
    "properties": {
        "namespace": STRING,
        "name": STRING,
        "facets": facets(
            {
                "schema": facet({"fields": {"type": "array", "items": SCHEMA_FIELD}}, []),
                "version": facet({"datasetVersion": STRING}, ["datasetVersion"]),
            }
        ),
    },
    "required": ["namespace", "name"],
}
RUN_EVENT = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "eventType": {"enum": ["START", "RUNNING", "COMPLETE", "ABORT", "FAIL", "OTHER"]},
        "eventTime": DATE_TIME,
        "producer": URI,
        "schemaURL": URI,
        "run": {
            "type": "object",
            "properties": {"runId": {"type": "string", "format": "uuid"}, "facets": RUN_FACETS},
            "required": ["runId"],
        },
        "job": {
            "type": "object",
            "properties": {"namespace": STRING, "name": STRING, "facets": JOB_FACETS},
            "required": ["namespace", "name"],
        },
        "inputs": {"type": "array", "items": {"allOf": [DATASET, {"properties": {"inputFacets": facets({})}}]}},
        "outputs": {
            "type": "array",
            "items": {
                "allOf": [
                    DATASET,
                    {
                        "properties": {
                            "outputFacets": facets(
                                {
                                    "outputStatistics": facet(
                                        {"rowCount": {"type": "integer"}, "size": {"type": "integer"}}, []
                                    ),
                                    "subset": facet({"outputCondition": PARTITION_CONDITION}, ["outputCondition"]),
                                }
                            )
                        }
                    },
                ]
            },
        },
    },
    "required": ["eventTime", "producer", "schemaURL", "run", "job"],
}

FORMATS = jsonschema.FormatChecker()


@FORMATS.checks("date-time", raises=ValueError)
def _date_time(value: object) -> bool:
    if isinstance(value, str):
        if "T" not in value.upper():
            raise ValueError("no time part")
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    return True


@FORMATS.checks("uri")
def _uri(value: object) -> bool:
    return not isinstance(value, str) or bool(urlparse(value).scheme)


VALIDATOR = jsonschema.Draft202012Validator(RUN_EVENT, format_checker=FORMATS)


def schema_errors(event: dict[str, Any]) -> list[str]:
    """Every way `event` breaks the schema, as `path: message` lines (empty: valid)."""
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in VALIDATOR.iter_errors(event)]
