"""The reproducible sample catalog the demo and the tests run on (not part of the pipeline core)."""
