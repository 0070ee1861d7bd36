"""The small pieces every part of the OpenAPI document refers through: schema and response references.

Shared by ``openapi`` (the compatible routes and the document) and ``openapi_routes`` (the routes beyond
gary4web's), so neither imports the other's helpers.
"""

from __future__ import annotations

from typing import Any

REF_TEMPLATE = "#/components/schemas/{model}"


def json_ref(ref: str, description: str) -> dict[str, Any]:
    """A JSON response whose body is the component schema ``ref``."""
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


def error_ref(name: str) -> dict[str, str]:
    """A reference to one of the shared error responses (``components.responses``)."""
    return {"$ref": f"#/components/responses/{name}"}
