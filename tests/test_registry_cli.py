"""The operators' `switchboard` CLI against the real stack."""

from __future__ import annotations

import json
from pathlib import Path

from helpers.registry import cli, unique


def test_cli_manages_identity_providers_and_imports_models(stack, tmp_path: Path) -> None:
    org, user, provider = unique("org"), unique("user"), unique("prov")
    # The installed command, in a process of its own, for its answer and for a failure; the other calls in-process.
    assert json.loads(cli(stack, "orgs", "create", org, process=True).stdout)["name"] == org
    cli(stack, "users", "create", user)
    cli(stack, "members", "set", org, user, "write")
    token = json.loads(cli(stack, "tokens", "create", user, "laptop").stdout)["token"]
    assert token.startswith("hf_sb_")
    key_file = tmp_path / "key"
    key_file.write_text("sk-cli-secret-" + unique("k"))
    created = cli(
        stack,
        "providers",
        "create",
        provider,
        "--org",
        org,
        "--base-url",
        "http://127.0.0.1:9",
        "--tasks",
        "conversational",
        "--api-key-file",
        str(key_file),
    )
    assert json.loads(created.stdout)["hasApiKey"] is True
    assert key_file.read_text() not in created.stdout + created.stderr
    updated = json.loads(cli(stack, "providers", "update", provider, "--default-rank", "4").stdout)
    assert updated["defaultRank"] == 4 and updated["hasApiKey"] is True
    assert provider in cli(stack, "providers", "list").stdout
    assert json.loads(cli(stack, "orgs", "get", org).stdout)["members"][0]["role"] == "write"

    ns = unique("ns")
    lines = [
        json.dumps({"id": f"{ns}/m{i}", "pipeline_tag": "text-generation", "tags": ["t", str(i)], "downloads": i})
        for i in range(25)
    ]
    listing = tmp_path / "models.jsonl"
    listing.write_text("\n".join(lines) + "\n")
    imported = cli(stack, "models", "import", str(listing), "--batch-size", "10")
    assert json.loads(imported.stdout) == {"upserted": 25}
    assert "models" in imported.stderr  # the progress bar
    model = json.loads(cli(stack, "models", "get", f"{ns}/m7").stdout)
    assert model["tags"] == ["t", "7"] and model["pipelineTag"] == "text-generation"

    cli(stack, "tokens", "revoke", user, "laptop")
    failed = cli(stack, "tokens", "revoke", user, "laptop", check=False)
    assert failed.returncode != 0 and "404" in failed.stderr
    cli(stack, "members", "remove", org, user)
    cli(stack, "providers", "delete", provider)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a/b"}\nnot json\n')
    failed = cli(stack, "models", "import", str(bad), check=False, process=True)
    assert failed.returncode != 0 and "line 2" in failed.stderr


def test_tokens_carry_their_limits_from_the_cli_and_the_api_and_refuse_bad_ones(stack) -> None:
    user = unique("user")
    cli(stack, "users", "create", user)
    limits = "--requests-per-minute 60 --tokens-per-minute 100000 --budget-nano-usd 5000000000 --budget-period weekly"
    argv = [*limits.split(), "--expire-time", "2030-01-01T00:00:00Z", "--allowed-models", "a/b", "c/d"]
    token = json.loads(cli(stack, "tokens", "create", user, "ci", *argv).stdout)["token"]
    with stack.http(token) as http:
        listed = http.get("/v1/me/tokens").json()["apiTokens"]
        # a token with limits manages no tokens: it could lift its own, or make one without them
        managing = [http.post("/v1/me/tokens", json={"name": "x"}), http.patch("/v1/me/tokens/ci", json={}),
                    http.delete("/v1/me/tokens/ci")]  # fmt: skip
    assert [(a.status_code, a.json()["error"]["code"]) for a in managing] == [(403, "limited_token_cannot_manage")] * 3
    assert all("a token with limits cannot" in a.json()["error"]["message"] for a in managing)
    unlimited = json.loads(cli(stack, "tokens", "create", user, "main").stdout)["token"]
    with stack.http(unlimited) as http:
        mine = http.post("/v1/me/tokens", json={"name": "laptop", "limits": {"requestsPerMinute": 5}}).json()
        bad = {
            "requestsPerMinute": {"requestsPerMinute": -1},
            "tokensPerMinute": {"tokensPerMinute": 10**10},
            "budgetNanoUsd": {"budgetNanoUsd": -5, "budgetPeriod": "daily"},
            "budgetPeriod": {"budgetNanoUsd": 5, "budgetPeriod": "yearly"},
            "expireTime": {"expireTime": "2001-01-01T00:00:00Z"},
            "allowedModels": {"allowedModels": ["not a model"]},
        }
        refused = {key: http.post("/v1/me/tokens", json={"name": key, "limits": value}) for key, value in bad.items()}
        no_period = http.post("/v1/me/tokens", json={"name": "np", "limits": {"budgetNanoUsd": 5}})
    assert [t.pop("account", "") for t in listed] == [""]  # the user's own token, not an org's
    assert listed == [
        {
            "name": "ci",
            "suffix": token[-4:],
            "createTime": listed[0]["createTime"],
            "limits": {
                "requestsPerMinute": 60,
                "tokensPerMinute": "100000",
                "budgetNanoUsd": "5000000000",
                "budgetPeriod": "weekly",
                "expireTime": "2030-01-01T00:00:00Z",
                "allowedModels": ["a/b", "c/d"],
            },
        }
    ]
    assert {k: v for k, v in mine["apiToken"]["limits"].items() if v not in (0, "0", "", [])} == {
        "requestsPerMinute": 5
    }
    for key, answer in refused.items():
        assert answer.status_code == 400, (key, answer.text)
        assert key in answer.json()["error"]["message"] or key in (answer.json()["error"]["param"] or ""), answer.text
    assert no_period.status_code == 400 and "budgetPeriod" in no_period.json()["error"]["message"]
    updated = json.loads(cli(stack, "tokens", "update", user, "ci", "--tokens-per-minute", "7").stdout)
    assert {k: v for k, v in updated["limits"].items() if v not in (0, "0", "", [])} == {"tokensPerMinute": "7"}
    with stack.http(unlimited) as http:
        listed = http.get("/v1/me/tokens").json()["apiTokens"][0]["limits"]
        assert {k: v for k, v in listed.items() if v not in (0, "0", "", [])} == {"tokensPerMinute": "7"}
        assert http.patch("/v1/me/tokens/nope", json={}).status_code == 404
        assert http.patch("/v1/me/tokens/ci", json={"budgetPeriod": "daily"}).status_code == 400


def test_a_token_with_an_expiry_only_makes_tokens_that_expire_no_later(stack) -> None:
    user = unique("user")
    cli(stack, "users", "create", user)
    expiring = json.loads(cli(stack, "tokens", "create", user, "temp", "--expire-time", "2030-01-01T00:00:00Z").stdout)
    with stack.http(expiring["token"]) as http:
        made = http.post("/v1/me/tokens", json={"name": "child"})
        later = http.post("/v1/me/tokens", json={"name": "late", "limits": {"expireTime": "2031-01-01T00:00:00Z"}})
        lifted = http.patch("/v1/me/tokens/temp", json={})  # no expiry: later than its own
        sooner = http.post("/v1/me/tokens", json={"name": "soon", "limits": {"expireTime": "2029-01-01T00:00:00Z"}})
    assert made.status_code == 200 and made.json()["apiToken"]["limits"]["expireTime"] == "2030-01-01T00:00:00Z"
    assert (later.status_code, later.json()["error"]["param"]) == (403, "limits.expireTime")
    assert lifted.status_code == 200 and lifted.json()["limits"]["expireTime"] == "2030-01-01T00:00:00Z"
    assert sooner.status_code == 200 and sooner.json()["apiToken"]["limits"]["expireTime"] == "2029-01-01T00:00:00Z"


def test_cli_sets_how_a_provider_is_called_per_task(stack) -> None:
    org, provider = unique("org"), unique("prov")
    cli(stack, "orgs", "create", org)
    argv = ("providers", "create", provider, "--org", org, "--base-url", "http://127.0.0.1:9")
    tasks = ("--tasks", "feature-extraction", "text-to-speech", "summarization")
    created = json.loads(cli(stack, *argv, *tasks, "--task-format", "feature-extraction=hub").stdout)
    assert created["taskFormats"] == {"feature-extraction": "hub"}
    updated = cli(stack, "providers", "update", provider, "--task-format", "text-to-speech=openai")
    assert json.loads(updated.stdout)["taskFormats"] == {"text-to-speech": "openai"}
    with stack.http() as http:
        shown = http.get(f"/v1/providers/{provider}").json()
    assert shown["task_formats"] == {"feature-extraction": "openai", "text-to-speech": "openai", "summarization": "hub"}
    for wrong in ("summarization=openai", "text-to-image=hub", "no-such-task=hub", "feature-extraction=grpc"):
        failed = cli(stack, "providers", "update", provider, "--task-format", wrong, check=False)
        assert failed.returncode != 0 and "400" in failed.stderr and "taskFormats" in failed.stderr, wrong
    malformed = cli(stack, "providers", "update", provider, "--task-format", "hub", check=False)
    assert malformed.returncode != 0 and "TASK=FORMAT" in malformed.stderr
    cli(stack, "providers", "delete", provider)
