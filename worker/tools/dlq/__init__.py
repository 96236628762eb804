"""``capillary-aep dlq``: inspect, export, retest and redrive the dead-letter topic.

Every command reads the DLQ by partition assignment under a private, never-committing group
(the redrive job under its own progress group), so the worker's group is never disturbed.

| module | holds |
|---|---|
| ``record.py`` | one dead-letter record and what its headers say |
| ``filters.py`` | which records a command selects (pure) |
| ``reader.py`` | scanning the topic between offsets or over a time window |
| ``summary.py`` | counts by stage, class, status, target, event, source (pure) |
| ``render.py`` | a record for people and for JSONL, PII masked by default |
| ``retest.py`` | today's decode/validate/transform on a dead letter |
| ``redrive.py`` | exactly-once re-publishing, one Kafka transaction per chunk |
| ``command.py`` | the click group |
"""
