"""The state store: tables, engine factory, migrations and the Store interface."""

from gateway.store.engine import create_engine
from gateway.store.migrate import upgrade
from gateway.store.store import RecordedEvent, Store, StoredTicket

__all__ = ["RecordedEvent", "Store", "StoredTicket", "create_engine", "upgrade"]
