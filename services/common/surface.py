"""The public gRPC surface, as runtime code needs it: the services Envoy transcodes and routes,
and the descriptor set that describes them (server reflection serves it on the public port).
What Envoy is given of them is generated at deploy time (edge/envoy.py)."""

from __future__ import annotations

from pathlib import Path

DESCRIPTOR = Path(__file__).resolve().parents[2] / "gen" / "switchboard.pb"

# gRPC service -> (cluster, route timeout of its unary methods): how long Envoy waits for a whole answer.
# A method that answers with a stream (the Router's chat, Responses, Messages, completions and speech,
# unary answers of theirs included) has no route timeout: Envoy's would cut a long stream mid-body.
# Envoy's stream idle timeout and the Router's upstream timeouts bound those (edge/envoy.py,
# _grpc_routes; docs/edge.md, "Route timeouts"). Internal services are not routed.
PUBLIC_SERVICES: dict[str, tuple[str, str]] = {
    "switchboard.registry.v1.RegistryService": ("registry", "15s"),
    "switchboard.registry.v1.AdminService": ("registry", "120s"),
    "switchboard.registry.v1.AccountService": ("registry", "15s"),
    "switchboard.router.v1.RouterService": ("router", "600s"),
    "switchboard.billing.v1.BillingService": ("billing", "15s"),
    "switchboard.billing.v1.BillingAdminService": ("billing", "600s"),
}

# The request metadata by which a caller asks for a unary answer's metadata (provider, request id,
# timing, rates) in its trailers, which leave with the answer in one write, instead of before it
# (services/router/servicer.py, _serve_unary). The edge asks so for every REST call and presents
# them as headers (envoy/errors.lua, mark_rest; envoy/answers.lua); it removes a caller's own.
ANSWER_METADATA_KEY = "switchboard-answer-metadata"
ANSWER_METADATA_IN_TRAILERS = "trailers"
