"""The jobworker.v1 API: jobworker.proto and the code scripts/gen-proto generates from it."""
