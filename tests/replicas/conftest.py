"""One cluster (two replicas of every service behind HAProxy) for the tests of this folder."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from otesse.auth.v1 import token_pb2_grpc
from services.common.grpc_client import create_channel
from tests.replicas.cluster import Cluster, running_cluster


@pytest.fixture(scope="package")
def cluster(test_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory,
            ) -> Iterator[Cluster]:
    with running_cluster(test_env, tmp_path_factory.mktemp("replicas")) as started:
        yield started


@pytest_asyncio.fixture(scope="package")
async def tokens(cluster: Cluster,
                 ) -> AsyncIterator[token_pb2_grpc.TokenServiceAsyncStub]:
    """``TokenService`` as a resource server sees it: both replicas, balanced per call."""
    channel = create_channel(cluster.token_grpc, services=("otesse.auth.v1.TokenService",))
    yield token_pb2_grpc.TokenServiceStub(channel)
    await channel.close()
