"""app.main's validation cache: each parsed document is validated once, its errors (or none)
kept for the next request with the same text, without hashing the document."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from graphql import parse
from strawberry.schema.schema import validate_document

import app.main as app_main
from app.main import ValidatedDocuments, make_schema
from domain.access import Principal


@pytest.fixture
def validations(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The documents app.main validates, as their printed operation names."""
    seen: list[str] = []

    def counting(schema: Any, document: Any, rules: Any) -> Any:
        seen.append(document.definitions[0].name.value)
        return validate_document(schema, document, rules)

    monkeypatch.setattr(app_main, "validate_document", counting)
    return seen


def context() -> SimpleNamespace:
    return SimpleNamespace(principal=Principal.system("test"))


async def test_a_query_is_validated_once_and_its_errors_kept(validations: list[str]) -> None:
    schema = make_schema()
    good = "query Good { __typename }"
    bad = "query Bad { noSuchField }"

    for _ in range(3):
        ok = await schema.execute(good, context_value=context())
        assert ok.errors is None and ok.data == {"__typename": "Query"}
        failed = await schema.execute(bad, context_value=context())
        assert failed.data is None and failed.errors is not None
        assert "Cannot query field 'noSuchField' on type 'Query'." in failed.errors[0].message

    assert validations == ["Good", "Bad"]


async def test_each_schema_validates_with_its_own_rules(validations: list[str]) -> None:
    introspect = "query Types { __schema { queryType { name } } }"
    development, production = make_schema(), make_schema(production=True)

    allowed = await development.execute(introspect, context_value=context())
    refused = await production.execute(introspect, context_value=context())
    again = await production.execute(introspect, context_value=context())

    assert allowed.errors is None
    assert refused.errors is not None and again.errors is not None
    assert [e.message for e in again.errors] == [e.message for e in refused.errors]
    assert validations == ["Types", "Types"]


def test_least_recently_used_documents_are_dropped_beyond_maxsize(
    validations: list[str],
) -> None:
    schema = make_schema()._schema
    cache = ValidatedDocuments(maxsize=2)
    a, b, c = (parse(f"query {name} {{ __typename }}") for name in "ABC")

    for document in (a, b, a, c, a, b):
        assert cache.errors(schema, document, ()) == []

    # c pushed out b (a was used after it); b then pushed out c.
    assert validations == ["A", "B", "C", "B"]
    assert len(cache) == 2


def test_documents_are_told_apart_by_identity_and_rules(validations: list[str]) -> None:
    schema = make_schema()._schema
    cache = ValidatedDocuments(maxsize=10)
    text = "query Same { __typename }"
    first, second = parse(text), parse(text)

    cache.errors(schema, first, ())
    cache.errors(schema, second, ())
    cache.errors(schema, first, tuple(app_main.PRODUCTION_RULES))
    cache.errors(schema, first, ())

    assert validations == ["Same", "Same", "Same"]
