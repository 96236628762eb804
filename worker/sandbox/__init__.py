"""AEP sandbox: a local IMS + DCS emulation for tests, benchmarks and trying out mappings."""
