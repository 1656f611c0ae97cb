"""The hub's GET /api/models/{id}, as the hub's clients read it before an inference call.

huggingface_hub's InferenceClient(provider=...) asks `model_info(id, expand=["inferenceProviderMapping"])`
and picks the entry of its provider (provider="auto": the first entry); its hf-inference helper
reads `pipeline_tag` and `tags` first; @huggingface/inference asks `expand[]=inferenceProviderMapping`
and `expand[]=pipeline_tag`. The answer is the hub's model-info JSON: inferenceProviderMapping is
an object keyed by provider id, in the order Switchboard would try the providers for the caller.
"""

from __future__ import annotations

from collections.abc import Iterable

from services.common.errors import invalid_argument, not_found
from services.common.tasks import SERVED_TASKS
from services.registry.domain.validation import CONVERSATIONAL_PIPELINES, check_count, check_model_id, shown
from services.registry.storage.index import ERROR, Candidate, CatalogModel, RegistryIndex

PROVIDER_MAPPING = "inferenceProviderMapping"
# The hub's expand values (huggingface_hub's ExpandModelProperty_T). The ones Switchboard has no
# data for are accepted and left out of the answer, as the hub leaves out what a model lacks.
HUB_PROPERTIES = frozenset(
    {
        "author", "baseModels", "cardData", "childrenModelCount", "config", "createdAt", "disabled",
        "downloads", "downloadsAllTime", "evalResults", "gated", "gguf", "inference", PROVIDER_MAPPING,
        "lastModified", "library_name", "likes", "mask_token", "model-index", "pipeline_tag", "private",
        "resourceGroup", "safetensors", "sha", "siblings", "spaces", "tags", "transformersInfo",
        "trendingScore", "usedStorage", "widgetData",
    }
)  # fmt: skip
# What the answer without expand holds (the hub's default model info, as far as Switchboard knows it).
DEFAULT_PROPERTIES = ("author", "private", "disabled", "gated", "pipeline_tag", "tags")


def check_expand(expand: Iterable[str]) -> list[str]:
    expand = list(expand)
    check_count(expand, len(HUB_PROPERTIES), "expand")
    for value in expand:
        if value not in HUB_PROPERTIES:
            message = (
                f"expand: {shown(value)} is not a model property; the hub's are {', '.join(sorted(HUB_PROPERTIES))}"
            )
            raise invalid_argument("INVALID_REQUEST", message, "expand")
    return expand


def hub_model(index: RegistryIndex, asked: str, user: str | None, expand: list[str]) -> dict:
    """The model's hub JSON: the properties asked (or the default ones) that Switchboard knows."""
    check_model_id(asked, "model")
    model_id = index.canonical(asked)
    model = index.catalog.get(model_id)
    if model is None:
        raise not_found("MODEL_NOT_FOUND", f"model {shown(asked)} is not in the catalog")
    wanted = check_expand(expand) or DEFAULT_PROPERTIES
    properties = {
        "author": model_id.partition("/")[0] if "/" in model_id else None,
        "private": False,
        "disabled": False,
        "gated": False,
        "pipeline_tag": model.pipeline_tag or None,
        "tags": list(model.tags),
    }
    answer: dict = {"_id": model_id, "id": model_id}
    if not expand:
        answer["modelId"] = model_id
    for name in wanted:
        if name == PROVIDER_MAPPING:
            answer[name] = provider_mapping(index, model_id, model, user or "")
        elif properties.get(name) is not None:
            answer[name] = properties[name]
    return answer


def provider_mapping(index: RegistryIndex, model_id: str, model: CatalogModel, user: str) -> dict[str, dict]:
    """Provider id -> {status, providerId, task, ...}: one entry per provider (the model's own task
    first), the providers in the caller's routing order, those failing their probes last."""
    entries: dict[str, dict] = {}
    failing: list[tuple[Candidate, str]] = []
    for task in _tasks_of(index, model_id, model):
        resolution = index.resolve(model_id, user, task)
        for candidate in resolution.candidates:
            entries.setdefault(candidate.provider, _entry(candidate, task))
        failing += [(candidate, task) for candidate in resolution.failing]
    for candidate, task in failing:
        entries.setdefault(candidate.provider, _entry(candidate, task))
    return entries


def _tasks_of(index: RegistryIndex, model_id: str, model: CatalogModel) -> list[str]:
    """The served tasks the model may be mapped for, its own first (chat for a chat model)."""
    own = "conversational" if _is_chat(model) else model.pipeline_tag
    others = sorted(task for task in index.tasks_for(model_id) if task in SERVED_TASKS and task != own)
    return [own, *others] if own in SERVED_TASKS else others


def _is_chat(model: CatalogModel) -> bool:
    return model.pipeline_tag in CONVERSATIONAL_PIPELINES and "conversational" in model.tags


def _entry(candidate: Candidate, task: str) -> dict:
    """One provider's entry as the hub writes it (a LoRA adapter's weights with a tag-filter match)."""
    entry = {"status": candidate.status, "providerId": candidate.provider_model, "task": task}
    if candidate.status == ERROR and candidate.status_reason:
        entry["statusReason"] = candidate.status_reason
    adapter = candidate.adapter
    if adapter is not None:
        entry.update(type="tag-filter", adapter=adapter.type, adapterWeightsPath=adapter.weights_path)
    else:
        entry["type"] = "single-model"
    return entry
