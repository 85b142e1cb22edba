"""The worker's consumer reads committed records only (Kafka's `read_committed` isolation).

Shops' producers may write the input topics in transactions (librdkafka's or the Java client's
`transactional.id`, Kafka Streams with exactly-once): a transaction they abort must leave no
trace. Faust's worker consumer reads uncommitted unless Faust itself runs exactly-once, so the
events of an aborted transaction were folded into the profiles. With `read_committed` the broker
serves each partition up to its last stable offset and names the aborted transactions, whose
batches aiokafka then skips; transaction markers (control records) are skipped at either level,
never delivered, so never dead-lettered. Persona's own producers are not transactional: on the
topics only they write, the last stable offset is the high watermark, and nothing changes.
"""

from __future__ import annotations

from streams.fetch_limit import set_on_worker_consumer

ISOLATION_LEVEL = "read_committed"


def install() -> None:
    """Make Faust's worker consumer read committed records only (idempotent)."""
    set_on_worker_consumer("_isolation_level", ISOLATION_LEVEL)  # read when its fetcher starts
