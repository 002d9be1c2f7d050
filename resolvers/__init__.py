"""Use cases: what each GraphQL operation does, one transaction each, plus loader batches.

Each public coroutine takes the ``Database``, plain arguments and the acting principal, and
returns models or raises ``domain.errors.DomainError``. Nothing here knows about Strawberry.
"""
