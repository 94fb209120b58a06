"""API keys: when configured, MailService calls need `authorization: Bearer <key>`."""

import grpc
import pytest

import mailroom
from mailroom import MailroomClient
from mailroom_processes import ApiProcess, grpc_serving


@pytest.fixture
def keyed_api(service_env, tmp_path):
    env = {**service_env, "MAILROOM_API_KEYS": '["s3cret", "other"]'}
    handle = ApiProcess(env, tmp_path / "api.log").start()
    yield handle
    handle.stop()


def test_calls_need_a_known_key(keyed_api):
    with MailroomClient(keyed_api.target, api_key="s3cret", timeout=10) as client:
        email_id = client.send_email(["a@example.com"], "keyed", "hello")
        assert client.get_email(email_id).id == email_id
    for key in (None, "wrong"):
        with (
            MailroomClient(keyed_api.target, api_key=key, timeout=10) as client,
            pytest.raises(mailroom.Unauthenticated),
        ):
            client.send_email(["a@example.com"], "keyed", "hello")


def test_health_stays_open_without_a_key(keyed_api):
    assert grpc_serving(keyed_api.target)
    with grpc.insecure_channel(keyed_api.target) as channel:
        grpc.channel_ready_future(channel).result(timeout=5)
