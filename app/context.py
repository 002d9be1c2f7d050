"""What every resolver gets as ``info.context``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.broadcast import EventHub
from app.loaders import Loaders
from db.database import Database
from domain.access import Principal
from domain.orders import PricingPolicy


@dataclass
class Context:
    request: Any
    response: Any
    db: Database
    loaders: Loaders
    pricing: PricingPolicy
    stream: EventHub
    principal: Principal
    request_id: str
    # WebSocket only: the connection_init payload (Strawberry fills it in).
    connection_params: Any = None

    @property
    def actor(self) -> Principal:
        """Who the use cases record as having acted: the authenticated principal."""
        return self.principal
