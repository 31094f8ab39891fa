import pytest

from tests.harness import Server


@pytest.fixture
def make_server():
    """Start real ``cellbox serve`` processes; at teardown each must exit 0 on stdin EOF and
    leave no process behind."""
    servers: list[Server] = []

    def make(*args: str, **kwargs) -> Server:
        server = Server(*args, **kwargs)
        servers.append(server)
        return server

    yield make
    for server in servers:
        if server.proc.poll() is None:
            code = server.close()
            assert code == 0, server.stderr_text()[-3000:]
        server.assert_no_leftovers()


@pytest.fixture
def server(make_server):
    return make_server("--kill-grace", "1")


@pytest.fixture(params=["contained", "uncontained"])
def either_server(request, make_server):
    """The ``server`` fixture's server with and without PID-namespace containment: tests of
    what must hold both where the kernel contains sessions and where the fallbacks (process
    groups, markers) do."""
    extra = ["--no-containment"] if request.param == "uncontained" else []
    return make_server("--kill-grace", "1", *extra)
