"""Envoy's route timeout covers a whole answer, its body included: on a method that answers with a stream
(the Router's chat, Responses, Messages, completions, speech) it would reset a long stream mid-body, with
no error event and no [DONE]. Such methods have none; the unary methods keep their service's
(services/common/surface.py). What Envoy does with a route is read here from the rendered configuration,
as Envoy chooses it: the first route whose match fits (a transcoded call is routed again by its gRPC path)."""

from __future__ import annotations

import re

from helpers.edge import hcm_of, rendered

from edge.descriptors import descriptors
from services.common.surface import PUBLIC_SERVICES

GRPC_HEADERS = {"content-type": "application/grpc"}


def _string_matches(matcher: dict, value: str) -> bool:
    if "exact" in matcher:
        return value == matcher["exact"]
    if "prefix" in matcher:
        return value.startswith(matcher["prefix"])
    if "contains" in matcher:
        return matcher["contains"] in value
    return re.fullmatch(matcher["safe_regex"]["regex"], value) is not None


def _matches(match: dict, path: str, headers: dict[str, str]) -> bool:
    if "path" in match and path != match["path"]:
        return False
    if "prefix" in match and not path.startswith(match["prefix"]):
        return False
    if "safe_regex" in match and re.fullmatch(match["safe_regex"]["regex"], path.partition("?")[0]) is None:
        return False
    for header in match.get("headers", []):
        value = path if header["name"] == ":path" else headers.get(header["name"])
        found = value is not None and _string_matches(header["string_match"], value)
        if found == header.get("invert_match", False):
            return False
    return True


def chosen_route(config: dict, path: str, headers: dict[str, str]) -> dict:
    """The route Envoy takes for a request: the first whose match fits."""
    routes = hcm_of(config)["route_config"]["virtual_hosts"][0]["routes"]
    return next(route for route in routes if _matches(route["match"], path, headers))


def test_a_method_that_answers_with_a_stream_has_no_route_timeout_and_a_unary_one_keeps_its_services() -> None:
    config = rendered()
    timeouts, expected, streamed = {}, {}, set()
    for service, proto in descriptors().services:
        if service not in PUBLIC_SERVICES:
            continue
        cluster, unary_timeout = PUBLIC_SERVICES[service]
        for method in proto.method:
            route = chosen_route(config, f"/{service}/{method.name}", GRPC_HEADERS)["route"]
            stream = method.server_streaming or method.client_streaming
            timeouts[f"{service}.{method.name}"] = (route["cluster"], route["timeout"], "max_stream_duration" in route)
            expected[f"{service}.{method.name}"] = (cluster, "0s" if stream else unary_timeout, False)
            if stream:
                streamed.add(f"{service}.{method.name}")
    assert timeouts == expected
    assert all(timeout != "0s" for _, timeout in PUBLIC_SERVICES.values())  # a unary call stays bounded
    router = "switchboard.router.v1.RouterService."
    streams = {"CreateChatCompletion", "CreateResponse", "CreateMessage", "CreateCompletion", "CreateSpeech"}
    assert {router + name for name in streams} <= streamed
