"""Read-only views of raw stored documents under their mongoengine attribute names.

Building a mongoengine document from a raw one costs about a third of a millisecond per email
(validation and conversion of every field, embedded documents included): 17 ms for a ListEmails
page of 51, the largest share of the API's time for a page. A page is read raw and shown
through :class:`DocumentView`, which converts nothing until an attribute is read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mongoengine import Document, EmbeddedDocument
from mongoengine.fields import EmbeddedDocumentListField


class DocumentView:
    """A raw document read through a mongoengine document class's attribute names.

    ``view.id`` reads ``_id``, a renamed field its stored name (``db_field``), a missing field
    its default (as the document would have it), and an embedded document list is a list of
    views. Writing is not possible: use the repository functions.

    Args:
        son: The document as pymongo returned it.
        document_type: The mongoengine class it was stored as.
    """

    __slots__ = ("_son", "_type")

    def __init__(
        self, son: Mapping[str, Any], document_type: type[Document] | type[EmbeddedDocument]
    ) -> None:
        self._son = son
        self._type = document_type

    def __getattr__(self, name: str) -> Any:
        field = self._type._fields.get(name)
        if field is None:
            raise AttributeError(f"{self._type.__name__} has no field {name!r}")
        value = self._son.get(field.db_field)
        if value is None:
            default = field.default
            return default() if callable(default) else default
        if isinstance(field, EmbeddedDocumentListField):
            inner = field.field.document_type
            return [DocumentView(item, inner) for item in value]
        return value

    def __repr__(self) -> str:
        return f"DocumentView({self._type.__name__}, _id={self._son.get('_id')!r})"
