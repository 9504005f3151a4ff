"""The PostgreSQL sink state's tables: component ``sink_state`` of the queue's migrations.

:func:`~engram_voice.memory.postgres_schema.migrate` applies them with the queue's
advisory lock and versions table, so replicas starting at once migrate once.
"""

from __future__ import annotations

__all__ = ["COMPONENT", "MIGRATIONS"]

COMPONENT = "sink_state"
MIGRATIONS: tuple[str, ...] = (
    # 1: id map, batch in flight, delivered records
    """
    CREATE TABLE memory_sink_ids (
        sink       text NOT NULL,
        kind       text NOT NULL,
        our_id     text NOT NULL,
        sink_id    text NOT NULL,
        created_at double precision NOT NULL,
        PRIMARY KEY (sink, kind, our_id)
    );
    CREATE TABLE memory_sink_batches (
        sink       text NOT NULL,
        session_id text NOT NULL,
        batch_key  text NOT NULL,
        target     text NOT NULL,
        messages   bytea NOT NULL,
        created_at double precision NOT NULL,
        PRIMARY KEY (sink, session_id)
    );
    CREATE INDEX memory_sink_batches_age ON memory_sink_batches (created_at);
    CREATE TABLE memory_sink_delivered (
        sink         text NOT NULL,
        session_id   text NOT NULL,
        message_id   text NOT NULL,
        part         integer NOT NULL,
        delivered_at double precision NOT NULL,
        PRIMARY KEY (sink, session_id, message_id, part)
    );
    CREATE INDEX memory_sink_delivered_age ON memory_sink_delivered (delivered_at);
    """,
)
"""Migration N is ``MIGRATIONS[N - 1]``; append only, never edit one that shipped."""
