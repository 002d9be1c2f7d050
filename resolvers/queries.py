"""Pagination arguments and pages as the use cases hand them to the API layer."""

from db.queries import DEFAULT_PAGE_SIZE, Page, PageArgs

__all__ = ["DEFAULT_PAGE_SIZE", "Page", "PageArgs"]
