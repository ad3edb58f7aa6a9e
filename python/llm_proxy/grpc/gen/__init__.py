"""Generated gRPC stubs; regenerate with `python scripts/gen_grpc.py`, never edit."""
