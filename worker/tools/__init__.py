"""Operator tools: samples, replay, DLQ inspection and redrive."""
