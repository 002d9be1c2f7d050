"""The Strawberry layer: types, inputs, payloads, and thin root Query/Mutation/Subscription."""

from schema.root import Mutation, Query, Subscription, build_schema

__all__ = ["Mutation", "Query", "Subscription", "build_schema"]
