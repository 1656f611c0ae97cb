"""The stack on PostgreSQL: Registry and Billing share one database (each
with its own Alembic version table), and the partners API, the ledger and
reconciliation behave as on SQLite. The stack is the worker's shared one on PostgreSQL
(tests/conftest.py): the tests' names are their own."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from helpers.billing import by_provider, reconcile, record, reference_provider, register_provider, store, unique, usage
from helpers.registry import build_world, ok
from switchboard.registry.v1 import registry_service_pb2 as registry_pb
from switchboard.registry.v1 import registry_service_pb2_grpc as registry_grpc


def test_partners_api_on_postgres(postgres_stack) -> None:
    with postgres_stack.admin() as admin:
        world = build_world(admin)
    chat = world.models["chat"]
    body = {"task": "conversational", "hfModel": chat, "providerModel": "chat-v1", "status": "live"}
    with postgres_stack.http(world.tokens["writer"]) as partner:
        mapping_id = ok(partner.post(f"/api/partners/{world.provider}/models", json=body))["_id"]
        assert partner.post(f"/api/partners/{world.provider}/models", json=body).status_code == 409
    with postgres_stack.http() as public:
        table = ok(public.get(f"/api/partners/{world.provider}/models"))
    assert table["conversational"][chat] == {"_id": mapping_id, "providerId": "chat-v1", "status": "live"}


def test_ledger_and_reconciliation_on_postgres(postgres_stack) -> None:
    from services.reference_provider.app import Knobs, State

    account, provider = unique("user"), unique("ref")
    records = [record(account, provider, estimate=5_000) for _ in range(25)]
    with reference_provider("pg-billing-token") as cost_url, postgres_stack.admin() as admin:
        register_provider(admin, provider, cost_url, "Bearer pg-billing-token")
        store(postgres_stack, records + records)  # sent twice, stored once
        reconcile(postgres_stack)
    line = by_provider(usage(postgres_stack, account))[provider]
    oracle = State(Knobs())
    assert line["settledNanoUsd"] == sum(oracle.cost_of(r.provider_request_id) for r in records)
    assert (line["pendingNanoUsd"], line["requests"]) == (0, 25)


def test_prices_up_to_64_bits_are_kept_on_postgres(postgres_stack) -> None:
    """The price check allows 0 .. 2^63 - 1 nano-USD in every field; PostgreSQL keeps each (a 32-bit
    column refused $3 an image with a 500)."""
    with postgres_stack.admin() as admin:
        world = build_world(admin)
    fields = ("inputTokenNanoUsd", "outputTokenNanoUsd", "requestNanoUsd", "imageNanoUsd", "unitNanoUsd")
    price = {"providerModel": "m-v1", **{field: str(2**63 - 1 - i) for i, field in enumerate(fields)}}
    with postgres_stack.http(world.tokens["writer"]) as partner:
        kept = ok(partner.put(f"/api/partners/{world.provider}/prices", json={"prices": [price]}))["prices"]
    assert kept == [price]


def test_mappings_created_at_once_each_keep_their_place_in_the_typed_listing_on_postgres(postgres_stack) -> None:
    """Creates racing on PostgreSQL's several connections each get a place of their own (two that
    shared one made a page ending on the first skip the second)."""
    with postgres_stack.admin() as admin:
        world = build_world(admin)
    bodies = [{"type": "tag-filter", "task": "text-to-image", "tags": [f"t-{i}"], "providerModel": f"m-{i}",
               "adapterType": "lora"} for i in range(40)]  # fmt: skip
    with postgres_stack.http(world.tokens["writer"]) as partner, ThreadPoolExecutor(8) as pool:
        created = list(pool.map(lambda body: partner.post(f"/api/partners/{world.provider}/models", json=body), bodies))
    assert [answer.status_code for answer in created] == [200] * len(bodies)
    with postgres_stack.channel() as channel:
        stub, seen, token = registry_grpc.RegistryServiceStub(channel), set(), ""
        while True:  # one mapping a page: each page ends on one seq
            request = registry_pb.ListModelMappingsRequest(provider=world.provider, page_size=1, page_token=token)
            page = stub.ListModelMappings(request, timeout=10)
            seen.update(mapping.id for mapping in page.model_mappings)
            if not (token := page.next_page_token):
                break
    assert seen == {answer.json()["_id"] for answer in created}
