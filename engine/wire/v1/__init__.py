"""Generated protobuf and gRPC code for protos/engine/v1/engine.proto. Do not edit: run
`make protos`."""
