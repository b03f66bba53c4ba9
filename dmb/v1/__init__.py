"""Generated protobuf and gRPC code for the `dmb.v1` contracts (run `dmb codegen`; do not edit)."""
