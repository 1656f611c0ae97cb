"""`switchboard up --demo`: a reference provider, a small catalog with model aliases, a demo
user, and the account tokenless calls are billed to (anonymous mode, on with --demo).

Everything goes through the public admin and partners REST APIs, as an operator
would do it, and is idempotent: a second start on the same data directory
updates the provider's address and key and keeps the rest.
"""

from __future__ import annotations

import json
import secrets
import sys

from services.common.tasks import DEFAULT_REQUEST_ID_HEADER, SERVED_TASKS
from services.launcher import Stack, free_port, http_ok
from services.reference_provider import API_KEY_ENV, BILLING_TOKEN_ENV
from services.registry.admin_cli import AdminClient

PROVIDER = "demo"
ORG = "demo-org"
USER = "demo"
CHAT_MODEL = "demo/chat-model"
IMAGE_MODEL = "demo/image-model"
LORA_MODEL = "demo/pixel-lora"
# A model per hub task the reference provider serves in its task format (reference_provider/tasks.py
# reads the task from the provider model id): demo/<task> -> reference-<task>.
TASK_MODELS = {
    task: f"demo/{task}" for task in SERVED_TASKS if task not in ("conversational", "text-generation", "text-to-image")
}
CATALOG = [
    *({"id": model, "pipeline_tag": task, "tags": [task]} for task, model in TASK_MODELS.items()),
    {"id": CHAT_MODEL, "pipeline_tag": "text-generation", "tags": ["conversational", "text-generation"]},
    {"id": IMAGE_MODEL, "pipeline_tag": "text-to-image", "tags": ["text-to-image"]},
    {
        "id": LORA_MODEL,
        "pipeline_tag": "text-to-image",
        "tags": ["lora", f"base_model:adapter:{IMAGE_MODEL}"],
        "adapter_weights_path": "pixel-lora.safetensors",
    },
]
MAPPINGS = [
    *(
        {"task": task, "hfModel": model, "providerModel": f"reference-{task}", "status": "live"}
        for task, model in TASK_MODELS.items()
    ),
    {"task": "conversational", "hfModel": CHAT_MODEL, "providerModel": "reference-chat", "status": "live"},
    {"task": "text-to-image", "hfModel": IMAGE_MODEL, "providerModel": "reference-image", "status": "live"},
    {
        "type": "tag-filter",
        "task": "text-to-image",
        "tags": ["lora", f"base_model:adapter:{IMAGE_MODEL}"],
        "providerModel": "reference-image",
        "adapterType": "lora",
        "status": "live",
    },
]
# What reference-chat supports, declared on every start (also on a data directory from before
# capabilities existed): tools and JSON schemas; it has no context limit (left unknown).
CHAT_CAPABILITIES = {"supportsTools": True, "supportsStructuredOutput": True}
# Names clients written for other services use (the seed's examples among them).
ALIASES = [{"name": "gpt-4o-mini", "target": CHAT_MODEL}, {"name": "flux", "target": IMAGE_MODEL}]
# The account of calls without a token under `switchboard up --demo`: a user with no token,
# $1 of monthly credits and the smallest limit, so the credits bind (a limit of 0 means none).
ANONYMOUS_ACCOUNT = "anonymous"
ANONYMOUS_CREDITS_NANO_USD = 1_000_000_000
ANONYMOUS_LIMIT_NANO_USD = 1
PRICES = [
    {"provider_model": "reference-chat", "input_token_nano_usd": 100, "output_token_nano_usd": 300,
     "request_nano_usd": 1000},
    {"provider_model": "reference-image", "image_nano_usd": 5_000_000},
    {"provider_model": "reference-feature-extraction", "input_token_nano_usd": 20},
]  # fmt: skip


class AdminApi(AdminClient):
    """The admin client, with the idempotent steps that set the demo up."""

    def ensure_provider(self, provider: dict) -> None:
        """Creates the provider, or updates it when it exists."""
        if self.call("POST", "/admin/v1/providers", provider, accept=(409,)):
            return
        changes = {k: v for k, v in provider.items() if k not in ("id", "org")}
        self.call("PATCH", f"/admin/v1/providers/{provider['id']}", changes)

    def ensure_member(self, org: str, user: str, role: str = "write") -> None:
        self.call("POST", "/admin/v1/orgs", {"name": org}, accept=(409,))
        self.call("POST", "/admin/v1/users", {"name": user}, accept=(409,))
        self.call("PUT", f"/admin/v1/orgs/{org}/members/{user}", {"role": role})

    def new_token(self, user: str, name: str | None = None) -> str:
        return self.call("POST", f"/admin/v1/users/{user}/tokens", {"name": name or f"t-{secrets.token_hex(4)}"})[
            "token"
        ]

    def fund_anonymous(self, account: str) -> None:
        """The anonymous account as a user (so no one else can take the name) with the demo's credits."""
        self.call("POST", "/admin/v1/users", {"name": account}, accept=(409,))
        credits = {"includedCreditsNanoUsd": ANONYMOUS_CREDITS_NANO_USD}
        self.call("PUT", f"/admin/v1/billing/accounts/{account}/credits", credits)
        self.call("PUT", f"/v1/billing/accounts/{account}/limit", {"limitNanoUsd": ANONYMOUS_LIMIT_NANO_USD})

    def add_mappings(self, provider: str, mappings: list[dict]) -> list[str]:
        """Creates mappings; an existing one (409) is kept. Returns the new ids."""
        ids = [self.call("POST", f"/api/partners/{provider}/models", m, accept=(409,)).get("_id") for m in mappings]
        return [i for i in ids if i]


def reference_provider_argv(port: int, *options: str) -> list[str]:
    return [sys.executable, "-m", "services.reference_provider", "--port", str(port), *options]


def reference_provider_secrets(api_key: str = "", billing_token: str = "") -> dict[str, str]:
    """The reference provider's secrets as its environment (never its command line: ps shows that)."""
    return {API_KEY_ENV: api_key, BILLING_TOKEN_ENV: billing_token}


def start_demo(stack: Stack, base_url: str, admin_token: str, anonymous_account: str = "") -> str:
    """Starts the demo parts in the stack (with an anonymous account's credits when one is
    given); returns lines to print for the operator."""
    port, api_key, billing_token = free_port(), secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    provider_url = f"http://127.0.0.1:{port}"
    stack.start(
        "reference_provider",
        reference_provider_argv(port),
        http_ok(f"{provider_url}/health"),
        env=reference_provider_secrets(api_key, billing_token),
        outside=True,
    )
    stack.wait_ready()
    api = AdminApi(base_url, admin_token)
    api.ensure_member(ORG, USER)
    api.ensure_provider(
        {
            "id": PROVIDER,
            "org": ORG,
            "base_url": provider_url,
            "api_key": api_key,
            "tasks": list(SERVED_TASKS),
            "request_id_header": DEFAULT_REQUEST_ID_HEADER,
            "billing_url": f"{provider_url}/v1/billing/costs",
            "billing_authorization": f"Bearer {billing_token}",
        }
    )
    api.call("PUT", f"/admin/v1/providers/{PROVIDER}/prices", {"prices": PRICES})
    api.call("POST", "/admin/v1/models:batchUpsert", {"models": CATALOG})
    api.add_mappings(PROVIDER, MAPPINGS)
    chat_mapping = api.call("GET", f"/api/partners/{PROVIDER}/models")["conversational"][CHAT_MODEL]["_id"]
    api.call("PATCH", f"/api/partners/{PROVIDER}/models/{chat_mapping}", CHAT_CAPABILITIES)
    for alias in ALIASES:
        api.call("POST", "/admin/v1/modelAliases", alias, accept=(409,))
    if anonymous_account:
        api.fund_anonymous(anonymous_account)
    token = api.new_token(USER, f"demo-{secrets.token_hex(4)}")
    chat = json.dumps({"model": CHAT_MODEL, "messages": [{"role": "user", "content": "Hello!"}]})
    return "\n".join(
        [
            f"  demo: reference provider '{PROVIDER}' at {provider_url}; models {CHAT_MODEL}, {IMAGE_MODEL}, "
            f"{LORA_MODEL}",
            f"  demo token (user {USER}): {token}",
            f"  try: curl -s {base_url}/v1/chat/completions -H 'Authorization: Bearer {token}' "
            f"-H 'Content-Type: application/json' -d '{chat}'",
            "  model aliases: " + ", ".join(f"{a['name']} -> {a['target']}" for a in ALIASES),
            *_anonymous_lines(anonymous_account),
        ]
    )


def _anonymous_lines(account: str) -> list[str]:
    if not account:
        return []
    return [
        f"  anonymous mode: calls without a token are billed to account '{account}' (unsafe on a port others can reach)"
    ]
