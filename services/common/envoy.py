"""Renders envoy/envoy.yaml.template for a set of service addresses."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from string import Template

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "envoy" / "envoy.yaml.template"
LUA_FILE = ROOT / "envoy" / "errors.lua"
DESCRIPTOR = ROOT / "gen" / "switchboard.pb"

# gRPC service -> (cluster, route timeout). Internal services are not routed.
PUBLIC_SERVICES: dict[str, tuple[str, str]] = {
    "switchboard.registry.v1.RegistryService": ("registry", "15s"),
    "switchboard.registry.v1.AdminService": ("registry", "120s"),
    "switchboard.router.v1.RouterService": ("router", "600s"),
    "switchboard.billing.v1.BillingService": ("billing", "15s"),
    "switchboard.billing.v1.BillingAdminService": ("billing", "600s"),
}

# Local replies (Envoy's own errors, transcoder rejections) in OpenAI's shape.
_LOCAL_REPLY_TYPES = {
    400: "invalid_request_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    502: "upstream_error",
    503: "service_unavailable_error",
    504: "timeout_error",
}


@dataclass
class EnvoyPorts:
    """Where Envoy listens and where each service's replicas are."""

    http_port: int
    admin_port: int
    backends: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    listen_address: str = "127.0.0.1"
    max_request_bytes: int = 8 * 1024 * 1024


def _routes() -> str:
    lines = []
    for service, (cluster, timeout) in PUBLIC_SERVICES.items():
        lines += [
            f'                        - match: {{prefix: "/{service}/"}}',
            f"                          route: {{cluster: {cluster}, timeout: {timeout}}}",
        ]
    return "\n".join(lines)


def _local_reply_mappers() -> str:
    lines = []
    for status, error_type in _LOCAL_REPLY_TYPES.items():
        lines += [
            "                    - filter:",
            "                        status_code_filter:",
            "                          comparison:",
            "                            op: EQ",
            f"                            value: {{default_value: {status}, runtime_key: unused_{status}}}",
            "                      body_format_override:",
            "                        json_format:",
            "                          error:",
            '                            message: "%LOCAL_REPLY_BODY%"',
            f"                            type: {error_type}",
            "                            param: null",
            f'                            code: "{status}"',
        ]
    return "\n".join(lines)


def _clusters(backends: dict[str, list[tuple[str, int]]]) -> str:
    lines = []
    for cluster, endpoints in backends.items():
        lines += [
            f"    - name: {cluster}",
            "      type: STATIC",
            "      connect_timeout: 1s",
            "      lb_policy: ROUND_ROBIN",
            "      typed_extension_protocol_options:",
            "        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:",
            '          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions',
            "          explicit_http_config:",
            "            http2_protocol_options: {max_concurrent_streams: 1024}",
            "      load_assignment:",
            f"        cluster_name: {cluster}",
            "        endpoints:",
            "          - lb_endpoints:",
        ]
        for host, port in endpoints:
            lines.append(
                f"              - endpoint: {{address: {{socket_address: {{address: {host}, port_value: {port}}}}}}}"
            )
    return "\n".join(lines)


def render(ports: EnvoyPorts) -> str:
    """The Envoy configuration as YAML text."""
    services = "\n".join(f"                        - {name}" for name in PUBLIC_SERVICES)
    return Template(TEMPLATE.read_text()).substitute(
        admin_port=ports.admin_port,
        http_port=ports.http_port,
        listen_address=ports.listen_address,
        max_request_bytes=ports.max_request_bytes,
        lua_file=LUA_FILE,
        descriptor=DESCRIPTOR,
        transcoded_services=services,
        routes=_routes(),
        local_reply_mappers=_local_reply_mappers(),
        clusters=_clusters(ports.backends),
    )
