"""Shared fixtures live in tests/fixtures/, one plugin module per real part."""

pytest_plugins = [
    "tests.fixtures.kafka",
    "tests.fixtures.sandbox",
]
