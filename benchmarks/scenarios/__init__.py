"""The scenarios. `gateway`, `grpc_bench`, `instructions` and `pyspy` run in `make bench`; every
module with a `main` also runs on its own: `python -m benchmarks.scenarios.<name> --help`."""
