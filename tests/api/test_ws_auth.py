"""WebSocket authentication against a real uvicorn server: credentials in connection_init or
in the upgrade request's header, refusals closed with 4403, anonymous connections that may
subscribe to nothing, and open subscriptions that end when their key is revoked or their
token expires. Also the cap on subscriptions per connection."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from app.auth import mint_customer_token
from app.settings import Settings
from domain.access import Role
from resolvers.access import list_api_keys, revoke_api_key
from resolvers.orders import confirm_order
from tests import factories, principals
from tests.api.test_subscriptions import serve
from tests.wsclient import LEGACY_WS, TRANSPORT_WS, ProtocolError, connect_graphql

TIMEOUT = 20.0  # hang protection only
EVENTS = "subscription { orderEvents { sequence type } }"


@pytest.fixture
def ws_settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, auth_recheck_seconds=1.0, debug=False)


async def seed(db: Any) -> Any:
    await factories.warehouse(db)
    await factories.product(db, "SKU-1")
    await factories.stock(db, "SKU-1", "MAIN", 100)
    return await factories.order(db, [("SKU-1", 1)])


async def wait_closed(ws: Any) -> tuple[int | None, str]:
    async with asyncio.timeout(TIMEOUT):
        try:
            while True:
                await ws.recv()
        except ConnectionClosed:
            pass
    return ws.close_code, ws.close_reason


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_credentials_in_connection_init(ws_settings: Settings, protocol: str) -> None:
    async with serve(ws_settings) as live:
        order = await seed(live.db)
        key = await factories.api_key(live.db, Role.STAFF)
        async with connect_graphql(
            live.ws_url,
            protocol,  # type: ignore[arg-type]
            init_payload={"authorization": f"Bearer {key}"},
        ) as client:
            op = await client.subscribe(EVENTS)
            await asyncio.sleep(0.3)
            await confirm_order(live.db, order.id, principals.SYSTEM)
            data = await op.next_data()
            assert data["orderEvents"]["type"] == "CONFIRMED"


async def test_credentials_in_the_upgrade_header(ws_settings: Settings) -> None:
    async with serve(ws_settings) as live:
        key = await factories.api_key(live.db, Role.STAFF)
        async with connect(
            live.ws_url,
            subprotocols=[Subprotocol(TRANSPORT_WS)],
            additional_headers=factories.bearer(key),
            proxy=None,
        ) as ws:
            await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
            assert json.loads(await ws.recv())["type"] == "connection_ack"
            await ws.send(
                json.dumps(
                    {"id": "1", "type": "subscribe", "payload": {"query": "{ viewer { role } }"}}
                )
            )
            message = json.loads(await ws.recv())
            assert message["payload"]["data"] == {"viewer": {"role": "STAFF"}}


@pytest.mark.parametrize(
    "authorization",
    ["Bearer og_00000000_nope-nope-nope-nope-nope-nope-nope", "Bearer x.y.z", "Basic abc", 42],
)
async def test_bad_credentials_close_the_connection_with_4403(
    ws_settings: Settings, authorization: Any
) -> None:
    async with (
        serve(ws_settings) as live,
        connect(live.ws_url, subprotocols=[Subprotocol(TRANSPORT_WS)], proxy=None) as ws,
    ):
        await ws.send(
            json.dumps({"type": "connection_init", "payload": {"authorization": authorization}})
        )
        code, reason = await wait_closed(ws)
        assert (code, reason) == (4403, "Forbidden")


async def test_legacy_protocol_refuses_bad_credentials(ws_settings: Settings) -> None:
    async with (
        serve(ws_settings) as live,
        connect(live.ws_url, subprotocols=[Subprotocol(LEGACY_WS)], proxy=None) as ws,
    ):
        await ws.send(
            json.dumps({"type": "connection_init", "payload": {"authorization": "Bearer x.y.z"}})
        )
        message = json.loads(await ws.recv())
        assert message == {
            "type": "connection_error",
            "payload": {"message": "Invalid token.", "extensions": {"code": "UNAUTHENTICATED"}},
        }
        code, _ = await wait_closed(ws)
        assert code == 1011


async def test_anonymous_connection_may_subscribe_to_nothing(ws_settings: Settings) -> None:
    async with serve(ws_settings) as live, connect_graphql(live.ws_url) as client:
        op = await client.subscribe(EVENTS)
        result = await op.next_result()
        assert result["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_revoking_a_key_ends_its_open_subscription(ws_settings: Settings) -> None:
    async with serve(ws_settings) as live:
        order = await seed(live.db)
        key = await factories.api_key(live.db, Role.STAFF, name="dashboard")
        other = await factories.api_key(live.db, Role.STAFF, name="other")
        async with (
            connect_graphql(live.ws_url, init_payload={"authorization": f"Bearer {key}"}) as doomed,
            connect_graphql(live.ws_url, init_payload={"authorization": f"Bearer {other}"}) as kept,
        ):
            doomed_op = await doomed.subscribe(EVENTS)
            kept_op = await kept.subscribe(EVENTS)
            await asyncio.sleep(0.3)
            [record] = [k for k in await list_api_keys(live.db) if k.name == "dashboard"]
            await revoke_api_key(live.db, record.id)
            with pytest.raises(
                ProtocolError, match="code=4403 reason='Forbidden: API key revoked'"
            ):
                await doomed_op.receive(within=TIMEOUT)
            # The other key's subscription goes on.
            await confirm_order(live.db, order.id, principals.SYSTEM)
            assert (await kept_op.next_data())["orderEvents"]["type"] == "CONFIRMED"


async def test_an_expiring_token_ends_its_subscription(ws_settings: Settings) -> None:
    async with serve(ws_settings) as live:
        order = await seed(live.db)
        token = mint_customer_token(live.services.settings, order.customer_id, ttl_seconds=2)
        async with connect_graphql(
            live.ws_url, init_payload={"authorization": f"Bearer {token}"}
        ) as client:
            op = await client.subscribe(EVENTS)
            with pytest.raises(ProtocolError, match="code=4403 reason='Forbidden: token expired'"):
                await op.receive(within=TIMEOUT)


async def test_subscriptions_per_connection_are_capped(ws_settings: Settings) -> None:
    settings = dataclasses.replace(ws_settings, max_subscriptions_per_connection=2)
    async with serve(settings) as live:
        key = await factories.api_key(live.db, Role.ADMIN)
        async with connect_graphql(
            live.ws_url, init_payload={"authorization": f"Bearer {key}"}
        ) as client:
            await client.subscribe(EVENTS)
            await client.subscribe(EVENTS)
            third = await client.subscribe(EVENTS)
            message = await third.receive()
            assert message.kind == "error"
            assert message.payload[0]["message"] == "Subscription limit reached"
