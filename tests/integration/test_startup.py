"""The API starts and stays up while MongoDB and Redis are unreachable, and recovers."""

import os

import grpc
import pymongo
import pytest
import redis as redis_py
from bson import ObjectId

from devtools.services import create_postgres_database, start_ferretdb, start_redis
from helpers import free_port, wait_until
from mailroom.v1 import mail_pb2, mail_pb2_grpc
from mailroom_processes import ApiProcess

REQUEST = mail_pb2.SendEmailRequest(to=["a@example.com"], title="hi", content="hello")


@pytest.mark.skipif(
    os.environ.get("MAILROOM_TEST_MONGODB_URI") is not None,
    reason="starts its own FerretDB on a chosen port",
)
def test_api_starts_without_backends_and_recovers(service_env, postgres_server, tmp_path):
    mongo_port, redis_port = free_port(), free_port()
    uri = f"mongodb://127.0.0.1:{mongo_port}/late"
    env = {
        **service_env,
        "MAILROOM_MONGODB_URI": uri,
        "MAILROOM_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
    }
    api = ApiProcess(env, tmp_path / "api.log").start()  # ready = health SERVING
    try:
        with grpc.insecure_channel(api.target) as channel:
            stub = mail_pb2_grpc.MailServiceStub(channel)
            # INTERNAL, not DEADLINE_EXCEEDED: the API gave up on MongoDB by its own short
            # timeout (1.5 s), long before this 10 s deadline and pymongo's default 30 s.
            with pytest.raises(grpc.RpcError) as info:
                stub.SendEmail(REQUEST, timeout=10)
            assert info.value.code() == grpc.StatusCode.INTERNAL

            ferret = start_ferretdb(
                mongo_port,
                tmp_path / "ferret",
                # A PostgreSQL database of its own: not shared with the session's FerretDB.
                postgresql_url=create_postgres_database(postgres_server, "startup_test"),
            )
            try:
                # Sends work again; Redis is still down, so the email stays QUEUED for the rescan.
                reply = wait_until(
                    lambda: stub.SendEmail(REQUEST, timeout=5),
                    timeout=15,
                    message="SendEmail succeeds once MongoDB answers",
                    ignore=(grpc.RpcError,),
                )
                client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000)
                emails = client.get_default_database().emails
                assert emails.find_one({"_id": ObjectId(reply.id)})["status"] == "QUEUED"
                # The background thread set the indexes up once MongoDB answered (on FerretDB,
                # only _id's: see core.store.connection.ensure_indexes).
                wait_until(
                    lambda: "MongoDB indexes are in place" in (tmp_path / "api.log").read_text(),
                    timeout=15,
                    message="indexes are set up once MongoDB answers",
                )
                assert set(emails.index_information()) == {"_id_"}
                client.close()
                redis = start_redis(redis_port, tmp_path / "redis")
                try:
                    assert stub.SendEmail(REQUEST, timeout=5).id
                    queue = redis_py.Redis.from_url(env["MAILROOM_REDIS_URL"])
                    assert queue.llen("dramatiq:mail") == 1
                    queue.close()
                finally:
                    redis.stop()
            finally:
                ferret.stop()
    finally:
        api.stop()
