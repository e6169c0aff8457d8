"""Every service runs on uvloop (:func:`services.common.serve.run`), gRPC servers and clients
included: gRPC's asyncio stack is not tested upstream on uvloop, so this test serves and calls
gRPC (concurrent unary calls to the health service, then a graceful stop) on the very loop
``run`` makes, in a process of its own as a service would."""

from __future__ import annotations

import asyncio
import multiprocessing

import uvloop
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.grpc_client import create_channel
from services.common.grpc_server import create_server
from services.common.serve import run

HEALTH = "grpc.health.v1.Health"


async def _serve_and_call(answers: list[str]) -> None:
    answers.append(type(asyncio.get_running_loop()).__module__)
    server = create_server(service="loop-test", add_servicers=lambda _server: [],
                           host="127.0.0.1", port=0)
    await server.start()
    channel = create_channel(f"127.0.0.1:{server.port}", services=(HEALTH,))
    stub = health_pb2_grpc.HealthStub(channel)
    try:
        replies = await asyncio.gather(*(stub.Check(health_pb2.HealthCheckRequest(),
                                                    timeout=5.0) for _ in range(50)))
        answers += [health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)
                    for r in replies[:1]]
        answers.append(str(len(replies)))
    finally:
        await channel.close()
        await server.stop(grace=1.0)
    answers.append("stopped")


def _child(queue: multiprocessing.Queue[list[str]]) -> None:
    answers: list[str] = []
    run(_serve_and_call(answers))
    queue.put(answers)


def test_grpc_serves_and_calls_on_the_loop_every_service_runs() -> None:
    context = multiprocessing.get_context("spawn")
    queue: multiprocessing.Queue[list[str]] = context.Queue()
    child = context.Process(target=_child, args=(queue,))
    child.start()
    answers = queue.get(timeout=60)
    child.join(timeout=30)

    assert child.exitcode == 0
    assert answers[0] == uvloop.Loop.__module__
    assert answers[1:3] == ["SERVING", "50"]
    assert answers[3] == "stopped"
