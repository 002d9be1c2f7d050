"""GraphQL over HTTP: methods, media types, status codes, GraphiQL and the health probes."""

from __future__ import annotations

import httpx

from app.settings import Settings
from tests.conftest import GraphQLClient

GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"
CREATE_WAREHOUSE = (
    'mutation { createWarehouse(input: {code: "MAIN", name: "Main", priority: 1}) '
    "{ warehouse { code } userErrors { code } } }"
)
WAREHOUSES = "{ warehouses { code name priority } }"
VALIDATION_ERROR = {
    "message": "Cannot query field 'nope' on type 'Query'. Did you mean 'node'?",
    "locations": [{"line": 1, "column": 3}],
}


async def test_post_json_runs_query_and_mutation(gql: GraphQLClient) -> None:
    created = await gql(CREATE_WAREHOUSE)
    assert created["data"] == {"createWarehouse": {"warehouse": {"code": "MAIN"}, "userErrors": []}}
    body = await gql(WAREHOUSES)
    assert body["data"] == {"warehouses": [{"code": "MAIN", "name": "Main", "priority": 1}]}


async def test_post_with_operation_name_picks_the_operation(
    gql: GraphQLClient, client: httpx.AsyncClient
) -> None:
    await gql(CREATE_WAREHOUSE)
    response = await client.post(
        "/graphql",
        json={
            "query": "query A { warehouses { code } } query B { warehouses { name } }",
            "operationName": "B",
        },
    )
    assert response.status_code == 200
    assert response.json()["data"] == {"warehouses": [{"name": "Main"}]}


async def test_get_runs_a_query(gql: GraphQLClient, client: httpx.AsyncClient) -> None:
    await gql(CREATE_WAREHOUSE)
    response = await client.get(
        "/graphql",
        params={
            "query": "query W($code: String!) { inventoryLevels(first: 10, "
            "filter: {warehouseCode: $code}) { totalCount } warehouses { code } }",
            "variables": '{"code": "MAIN"}',
        },
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json()["data"] == {
        "inventoryLevels": {"totalCount": 0},
        "warehouses": [{"code": "MAIN"}],
    }


async def test_get_mutation_is_refused_with_405(
    gql: GraphQLClient, client: httpx.AsyncClient
) -> None:
    response = await client.get("/graphql", params={"query": CREATE_WAREHOUSE})
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.text == "mutations are not allowed when using GET"
    # And nothing was created.
    assert (await gql(WAREHOUSES))["data"] == {"warehouses": []}


async def test_graphql_response_json_gets_its_media_type(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/graphql", json={"query": WAREHOUSES}, headers={"accept": GRAPHQL_RESPONSE_JSON}
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == f"{GRAPHQL_RESPONSE_JSON}; charset=utf-8"
    assert response.json()["data"] == {"warehouses": []}


async def test_graphql_response_json_preferred_when_listed_first(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/graphql",
        json={"query": WAREHOUSES},
        headers={"accept": f"{GRAPHQL_RESPONSE_JSON}, application/json;q=0.9"},
    )
    assert response.headers["content-type"] == f"{GRAPHQL_RESPONSE_JSON}; charset=utf-8"


async def test_graphql_response_json_validation_error_is_400_without_data(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/graphql", json={"query": "{ nope }"}, headers={"accept": GRAPHQL_RESPONSE_JSON}
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == f"{GRAPHQL_RESPONSE_JSON}; charset=utf-8"
    body = response.json()
    assert "data" not in body
    assert body["errors"] == [VALIDATION_ERROR]


async def test_graphql_response_json_bad_variable_is_400_without_data(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/graphql",
        json={
            "query": "query Q($n: Int) { orders(first: $n) { totalCount } }",
            "variables": {"n": "many"},
        },
        headers={"accept": GRAPHQL_RESPONSE_JSON},
    )
    assert response.status_code == 400
    body = response.json()
    assert "data" not in body
    assert [e["message"] for e in body["errors"]] == [
        "Variable '$n' has invalid value: Int cannot represent non-integer value: 'many'"
    ]


async def test_graphql_response_json_field_error_is_200_with_data(
    client: httpx.AsyncClient,
) -> None:
    # An error while executing is not a request error: the response is 200 with data.
    response = await client.post(
        "/graphql",
        json={"query": '{ node(id: "bad") { id } }'},
        headers={"accept": GRAPHQL_RESPONSE_JSON},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["data"] == {"node": None}
    assert [e["message"] for e in body["errors"]] == ["Argument `id`: 'bad' is not a valid ID."]


async def test_application_json_validation_error_is_200_with_errors(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/graphql", json={"query": "{ nope }"}, headers={"accept": "application/json"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["data"] is None
    assert body["errors"] == [VALIDATION_ERROR]


async def test_unacceptable_accept_header_is_406(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/graphql", json={"query": WAREHOUSES}, headers={"accept": "application/xml"}
    )
    assert response.status_code == 406
    assert response.text == f"Accept application/json or {GRAPHQL_RESPONSE_JSON}."


async def test_browser_get_serves_graphiql(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/graphql",
        headers={"accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert "<title>Strawberry GraphiQL</title>" in response.text


async def test_get_without_query_is_not_graphiql_for_json_clients(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/graphql", headers={"accept": "application/json"})
    assert response.status_code == 400
    assert "<html" not in response.text.lower()


async def test_every_response_carries_a_request_id(client: httpx.AsyncClient) -> None:
    first = await client.post("/graphql", json={"query": WAREHOUSES})
    second = await client.post("/graphql", json={"query": WAREHOUSES})
    assert len(first.headers["x-request-id"]) == 16
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


async def test_other_methods_are_refused(client: httpx.AsyncClient) -> None:
    response = await client.put("/graphql", json={"query": WAREHOUSES})
    assert response.status_code == 405


async def test_healthz(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"status": "ok"}


async def test_readyz(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "status": "ok",
        "checks": {"database": "ok", "broadcast": "ok", "broadcastReconnects": 0},
    }


async def test_debug_reports_sql_statement_count(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    response = await client.post("/graphql", json={"query": "{ __typename }"})
    assert response.json() == {
        "data": {"__typename": "Query"},
        "extensions": {
            "debug": {"sqlStatements": 0},
            # The cost report rides along; `__typename` costs nothing.
            "cost": {
                "requestedQueryCost": 0,
                "actualQueryCost": 0,
                "throttleStatus": {
                    "maximumAvailable": settings.cost_bucket,
                    "currentlyAvailable": settings.cost_bucket,
                    "restoreRate": settings.cost_restore_rate,
                },
            },
        },
    }
