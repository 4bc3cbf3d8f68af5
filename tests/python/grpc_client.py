"""A stock grpcio client of mcsd, run by server/tests/python_client.rs.

    python grpc_client.py STUBS TARGET default|localhost

STUBS holds the modules grpcio-tools generated from proto/mcs/v1/mcs.proto;
TARGET is a gRPC target such as `unix:/run/mcsd/mcsd.sock`.
`localhost` sets the channel option grpc.default_authority, as the README
says every gRPC C-core client must; `default` uses a channel with no
options, exactly as a user would first write it.

Either way the script does Allocate, Get, List, Stats and Release of one
container and prints one JSON object per line: {"call": ..., "ok": {...}} or
{"call": ..., "error": CODE, "details": ...}, stopping at the first error
(exit status 3). Exit status 0 means every call succeeded.
"""

import json
import sys

import grpc

stubs, target, mode = sys.argv[1:4]
sys.path.insert(0, stubs)
from mcs.v1 import mcs_pb2, mcs_pb2_grpc  # noqa: E402

if mode == "localhost":
    options = [("grpc.default_authority", "localhost")]
elif mode == "default":
    options = []
else:
    sys.exit(f"unknown mode {mode!r}")

TIMEOUT = 10
CONTAINER = "python-grpcio-1"


def report(call, **fields):
    print(json.dumps({"call": call, **fields}), flush=True)


def level(allocation):
    return {"level": allocation.level, "process_label": allocation.process_label}


with grpc.insecure_channel(target, options=options) as channel:
    labels = mcs_pb2_grpc.LabelsStub(channel)
    calls = [
        ("Allocate", lambda: labels.Allocate(
            mcs_pb2.AllocateRequest(container_id=CONTAINER, owner="python"), timeout=TIMEOUT),
         lambda r: {"created": r.created, **level(r.allocation)}),
        ("Get", lambda: labels.Get(
            mcs_pb2.GetRequest(container_id=CONTAINER), timeout=TIMEOUT),
         level),
        ("List", lambda: [a for chunk in labels.List(
            mcs_pb2.ListRequest(owner="python"), timeout=TIMEOUT) for a in chunk.allocations],
         lambda r: {"ids": [a.container_id for a in r]}),
        ("Stats", lambda: labels.Stats(mcs_pb2.StatsRequest(), timeout=TIMEOUT),
         lambda r: {"total": r.total, "free": r.free}),
        ("Release", lambda: labels.Release(
            mcs_pb2.ReleaseRequest(container_id=CONTAINER), timeout=TIMEOUT),
         lambda r: {"released": r.released, "level_freed": r.level_freed, **level(r.allocation)}),
    ]
    for name, call, summary in calls:
        try:
            reply = call()
        except grpc.RpcError as e:
            report(name, error=e.code().name, details=e.details())
            sys.exit(3)
        report(name, ok=summary(reply))
