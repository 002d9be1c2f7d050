"""What every resolver gets as ``info.context``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.broadcast import EventHub
from app.loaders import Loaders
from db.database import Database
from domain.orders import PricingPolicy


@dataclass
class Context:
    request: Any
    response: Any
    db: Database
    loaders: Loaders
    pricing: PricingPolicy
    stream: EventHub
    actor: str
    request_id: str
