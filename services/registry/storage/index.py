"""The Registry's in-memory index: what resolution and authentication read.

Loaded from the database at start and updated after every committed write, so
no request on a hot path queries the database. Tag-filter mappings are
bucketed by task and by one "key" tag (the tag rarest among tag-filters when
the filter was added): a lookup only visits the buckets of the model's own
tags, never every tag-filter.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from services.common.paging import json_bytes
from services.common.tasks import SERVED_TASKS

MODEL = "model"
TAG_FILTER = "tag-filter"
LIVE = "live"
STAGING = "staging"
ERROR = "error"  # set only by the health probes: a live mapping whose provider fails them; never routed
# Field names, the id, the status and the encoding of one listing entry, for a tag-filter and
# for a model mapping (tests/test_registry_limits.py and test_registry_page_bytes.py check they
# bound the real size: the protobuf Struct, and the JSON Envoy writes of it).
LISTING_ENTRY_OVERHEAD = (192, 128)
# What a status reason's key and a conformance summary add to a listing entry.
REASON_ENTRY_OVERHEAD = 32
CONFORMANCE_ENTRY_BYTES = 96


def intern_all(values: Iterable[str]) -> tuple[str, ...]:
    """Tags repeat across a million models: share one string object per tag."""
    return tuple(map(sys.intern, values))


class Conformance(NamedTuple):
    """A mapping's latest conformance report in brief."""

    check_time: datetime
    passed: bool
    passed_checks: int
    failed_checks: int
    skipped_checks: int
    supports_tools: bool
    supports_structured_output: bool


@dataclass(slots=True, frozen=True)
class Capabilities:
    """What a provider model supports; None is unknown (never declared nor observed)."""

    supports_tools: bool | None = None
    supports_structured_output: bool | None = None
    context_length: int | None = None


UNKNOWN = Capabilities()


class CatalogModel(NamedTuple):
    """A hub model as resolution needs it."""

    pipeline_tag: str
    tags: tuple[str, ...]
    adapter_weights_path: str


@dataclass(slots=True)
class Mapping:
    """A model mapping (hf_model set) or a tag-filter mapping (tags set, sorted)."""

    id: str
    seq: int
    provider: str
    type: str
    task: str
    hf_model: str
    tags: tuple[str, ...]
    provider_model: str
    status: str
    adapter_type: str
    create_time: datetime
    capabilities: Capabilities = UNKNOWN
    key_tag: str = ""
    # Lower wins among one provider's matches: model mappings, then more tags, then older.
    precedence: tuple[int, int, int] = (0, 0, 0)
    candidate: Candidate | None = None  # a model mapping's candidate, built once
    status_reason: str = ""  # why the status is ERROR
    conformance: Conformance | None = None

    def set_status(self, status: str) -> None:
        self.status = status
        self.candidate = None

    @property
    def tags_key(self) -> str:
        return ",".join(self.tags)

    @property
    def unique_key(self) -> tuple[str, str, str, str]:
        return (self.provider, self.task, self.hf_model, self.tags_key)

    @property
    def listing_bytes(self) -> int:
        """At least the size of this mapping's entry in its provider's partners listing."""
        return self.entry_bytes(details=True)

    def entry_bytes(self, details: bool) -> int:
        """At least the size of this mapping's listing entry, with its details (the probes' reason,
        the conformance summary) or without: as the JSON Envoy writes, escapes counted (a '<' takes
        6 bytes, a control character too), which is never less than the protobuf Struct it
        transcodes. The tags appear twice: key and value."""
        strings = [self.hf_model, self.provider_model, self.tags_key, self.tags_key, self.adapter_type, self.task]
        overhead = LISTING_ENTRY_OVERHEAD[self.type == MODEL] + 8 * len(self.tags)
        if details and self.status_reason:
            strings.append(self.status_reason)
            overhead += REASON_ENTRY_OVERHEAD
        if details and self.conformance is not None:
            overhead += CONFORMANCE_ENTRY_BYTES
        return json_bytes("".join(strings)) - 2 + overhead  # escapes are per character: one call, less its quotes


@dataclass(slots=True)
class IndexedProvider:
    """A provider as the index keeps it for resolution and write authorization (its org and rank;
    not services/common/providers.py ProviderEntry, the provider as the Router calls it)."""

    id: str
    org: str
    default_rank: int


class TokenTerms(NamedTuple):
    """What the index keeps of a token's limits and account, for authentication and authorization."""

    expiry: float | None = None  # its expireTime as Unix time; None: none
    limited: bool = False  # a rate, token, budget or model limit: it manages nothing, changes no partner data
    account: str = ""  # the org it bills (an org admin's token for the org); "": its user


@dataclass(slots=True)
class UserEntry:
    """A user's org roles and provider preference."""

    memberships: dict[str, str] = field(default_factory=dict)
    preferred_providers: tuple[str, ...] = ()


@dataclass(slots=True, frozen=True)
class Adapter:
    """The LoRA adapter of a tag-filter match."""

    type: str
    model: str
    weights_path: str
    base_provider_model: str


@dataclass(slots=True, frozen=True)
class Candidate:
    """One provider that can serve the model."""

    provider: str
    provider_model: str
    status: str
    mapping_id: str
    adapter: Adapter | None = None
    capabilities: Capabilities = UNKNOWN
    status_reason: str = ""


class Exclusion(NamedTuple):
    """A provider left out: why, in words, and the status of its mapping ("" when it has none)."""

    provider: str
    reason: str
    status: str = ""


@dataclass(slots=True)
class Resolution:
    """Candidates in order, and the providers left out with the reason."""

    model_found: bool
    candidates: list[Candidate] = field(default_factory=list)
    exclusions: list[Exclusion] = field(default_factory=list)
    model: str = ""  # the hub model id resolved (an alias's target)
    failing: list[Candidate] = field(default_factory=list)  # ERROR mappings: listed, never routed


@dataclass(frozen=True)
class Touched:
    """What a change touched, so caches downstream drop those entries and keep the rest:
    the hub models whose resolution may differ (every model when a tag-filter mapping
    changed: it matches models by their tags) and the tokens created or revoked."""

    models: frozenset[str] = frozenset()
    all_models: bool = False
    token_hashes: frozenset[str] = frozenset()


def _signature(mapping: Mapping) -> tuple:
    """What resolution reads of a mapping (seq and create time never change)."""
    return (
        mapping.type,
        mapping.task,
        mapping.hf_model,
        mapping.tags,
        mapping.provider_model,
        mapping.status,
        mapping.status_reason,
        mapping.conformance,
        mapping.capabilities,
    )


def _models_of(mappings: Iterable[Mapping]) -> Touched:
    mappings = list(mappings)
    return Touched(
        models=frozenset(m.hf_model for m in mappings if m.type == MODEL),
        all_models=any(m.type != MODEL for m in mappings),
    )


class RegistryIndex:
    """Providers, catalog, model aliases, mappings and identity in memory."""

    def __init__(self) -> None:
        self.catalog: dict[str, CatalogModel] = {}
        self.aliases: dict[str, str] = {}  # alias -> hub model id
        self.providers: dict[str, IndexedProvider] = {}
        self.mappings: dict[str, Mapping] = {}
        self.provider_mappings: dict[str, dict[str, Mapping]] = {}  # provider -> id -> mapping, oldest first
        self.users: dict[str, UserEntry] = {}
        self.tokens: dict[str, str] = {}  # SHA-256 hex of the token -> user
        self.token_expiry: dict[str, float] = {}  # SHA-256 hex of a token with an expireTime -> its Unix time
        self.limited_tokens: set[str] = set()  # SHA-256 hex of the tokens with a non-expiry limit
        self.token_accounts: dict[str, str] = {}  # SHA-256 hex of an org token -> its org
        self._keys: dict[tuple[str, str, str, str], str] = {}
        self._by_model: dict[str, list[Mapping]] = {}
        self._by_provider_model: dict[tuple[str, str, str], list[Mapping]] = {}
        self._tag_filters: dict[str, dict[str, list[Mapping]]] = {}  # task -> key tag -> filters
        self._filter_tag_counts: Counter[str] = Counter()
        self._order_keys: dict[str, tuple[int, str]] = {}  # provider -> default order key
        self.listing_bytes: Counter[str] = Counter()  # provider -> size of its partners listing
        self.loaded_revision = 0  # the newest change-log revision when loaded from the database

    # catalog

    def put_model(self, model_id: str, pipeline_tag: str, tags: Iterable[str], adapter_weights_path: str) -> None:
        self.catalog[sys.intern(model_id)] = CatalogModel(
            sys.intern(pipeline_tag), intern_all(tags), adapter_weights_path
        )

    def put_models(self, rows: Iterable[tuple[str, str, Iterable[str], str]]) -> Touched:
        """Catalog rows (id, pipeline tag, tags, weights path) as the database has them now."""
        ids = []
        for row in rows:
            self.put_model(*row)
            ids.append(row[0])
        return Touched(models=frozenset(ids))

    # model aliases

    def put_alias(self, name: str, target: str) -> None:
        self.aliases[name] = target

    def remove_alias(self, name: str) -> None:
        self.aliases.pop(name, None)

    def replace_alias(self, name: str, target: str | None) -> Touched:
        """The alias as the database has it now (None: deleted)."""
        if target is None:
            self.remove_alias(name)
        else:
            self.put_alias(name, target)
        return Touched(models=frozenset({name}))

    def with_aliases(self, touched: Touched) -> Touched:
        """The touched models and the aliases naming them: caches key answers by the name asked."""
        if touched.all_models or not touched.models:
            return touched
        names = [name for names in self.aliases_of(touched.models).values() for name in names]
        return Touched(touched.models.union(names), False, touched.token_hashes)

    def canonical(self, model_id: str) -> str:
        """The hub model id a name stands for: a catalog id is itself (the catalog wins over an
        alias of the same name, should one be upserted later), an alias its target; an unknown
        name is itself."""
        if model_id in self.catalog:
            return model_id
        return self.aliases.get(model_id, model_id)

    def aliases_of(self, model_ids: Iterable[str]) -> dict[str, list[str]]:
        """The live aliases (not shadowed by a catalog id) of these models, by model, sorted."""
        wanted = set(model_ids)
        found: dict[str, list[str]] = {}
        for name, target in sorted(self.aliases.items()):
            if target in wanted and name not in self.catalog:
                found.setdefault(target, []).append(name)
        return found

    # providers

    def put_provider(self, provider: IndexedProvider) -> None:
        self.providers[provider.id] = provider
        self._order_keys[provider.id] = (provider.default_rank, provider.id)
        self.provider_mappings.setdefault(provider.id, {})

    def remove_provider(self, provider_id: str) -> None:
        for mapping in list(self.provider_mappings.get(provider_id, {}).values()):
            self.remove_mapping(mapping.id)
        self.providers.pop(provider_id, None)
        self._order_keys.pop(provider_id, None)
        self.provider_mappings.pop(provider_id, None)
        self.listing_bytes.pop(provider_id, None)

    # mappings

    def conflicting_mapping(self, key: tuple[str, str, str, str]) -> str | None:
        """The id of the mapping that already holds this (provider, task, model or tags)."""
        return self._keys.get(key)

    def add_mapping(self, mapping: Mapping) -> None:
        mapping.precedence = (0 if mapping.type == MODEL else 1, -len(mapping.tags), mapping.seq)
        self.mappings[mapping.id] = mapping
        self.provider_mappings.setdefault(mapping.provider, {})[mapping.id] = mapping
        self._keys[mapping.unique_key] = mapping.id
        self.listing_bytes[mapping.provider] += mapping.listing_bytes
        key = (mapping.provider, mapping.task, mapping.provider_model)
        self._by_provider_model.setdefault(key, []).append(mapping)
        if mapping.type == MODEL:
            self._by_model.setdefault(mapping.hf_model, []).append(mapping)
            return
        mapping.key_tag = min(mapping.tags, key=lambda tag: (self._filter_tag_counts[tag], tag))
        self._filter_tag_counts.update(mapping.tags)
        self._tag_filters.setdefault(mapping.task, {}).setdefault(mapping.key_tag, []).append(mapping)

    def remove_mapping(self, mapping_id: str) -> Mapping | None:
        mapping = self.mappings.pop(mapping_id, None)
        if mapping is None:
            return None
        self.provider_mappings.get(mapping.provider, {}).pop(mapping_id, None)
        self._keys.pop(mapping.unique_key, None)
        self.listing_bytes[mapping.provider] -= mapping.listing_bytes
        _discard(self._by_provider_model, (mapping.provider, mapping.task, mapping.provider_model), mapping)
        if mapping.type == MODEL:
            _discard(self._by_model, mapping.hf_model, mapping)
        else:
            self._filter_tag_counts.subtract(mapping.tags)
            _discard(self._tag_filters.get(mapping.task, {}), mapping.key_tag, mapping)
        return mapping

    def mapped_models(self) -> list[str]:
        """Models with a model mapping (tag-filter matches are not enumerated)."""
        return [model_id for model_id in self._by_model if model_id in self.catalog]

    def tasks_for(self, model_id: str) -> set[str]:
        """Tasks a model may resolve for: its model mappings' and every tag-filter task."""
        return {m.task for m in self._by_model.get(model_id, ())} | set(self._tag_filters)

    def mapped_tasks(self, model_id: str) -> list[str]:
        """Every task the model (or the alias's model) has a mapping for, in any status, a matching
        tag-filter's included, in services/common/tasks.py's order."""
        model_id = self.canonical(model_id)
        model = self.catalog.get(model_id)
        found = {m.task for m in self._by_model.get(model_id, ())}
        for task, buckets in self._tag_filters.items():
            tags = model.tags if model is not None else ()
            if task not in found and any(all(t in tags for t in m.tags) for tag in tags for m in buckets.get(tag, ())):
                found.add(task)
        return [task for task in SERVED_TASKS if task in found]

    def provider_model_tasks(self, provider: str, provider_model: str) -> list[str]:
        """Every task the provider has a mapping of its model id for, in services/common/tasks.py's order."""
        return [task for task in SERVED_TASKS if self._by_provider_model.get((provider, task, provider_model))]

    def replace_provider_mappings(self, provider_id: str, mappings: Iterable[Mapping]) -> Touched:
        """The provider's mappings as the database has them now; the models whose mappings changed."""
        old = {m.id: _signature(m) for m in self.provider_mappings.get(provider_id, {}).values()}
        removed = [self.remove_mapping(mapping_id) for mapping_id in old]
        added = list(mappings)
        for mapping in added:
            self.add_mapping(mapping)
        new = {m.id: _signature(m) for m in added}
        changed = [m for m in removed if new.get(m.id) != old[m.id]] + [m for m in added if old.get(m.id) != new[m.id]]
        return _models_of(changed)

    def replace_provider(self, provider_id: str, entry: IndexedProvider | None, mappings: Iterable[Mapping]) -> Touched:
        """The provider (None: deleted, with its mappings) as the database has it now; its rank
        and org order and filter every answer naming it, so all the models it maps are touched."""
        before = _models_of(self.provider_mappings.get(provider_id, {}).values())
        if entry is None:
            self.remove_provider(provider_id)
            return before
        self.put_provider(entry)
        self.replace_provider_mappings(provider_id, mappings)
        now = _models_of(self.provider_mappings[provider_id].values())
        return Touched(before.models | now.models, before.all_models or now.all_models)

    # identity

    def replace_user(self, user: str, entry: UserEntry | None, tokens: dict[str, TokenTerms]) -> Touched:
        """The user's roles, preference and tokens (digest -> terms) as the database has them now;
        the tokens created or revoked since."""
        old = self.remove_tokens_of(user)
        if entry is None:
            self.users.pop(user, None)
            return Touched(token_hashes=frozenset(old))
        self.users[user] = entry
        self.add_tokens((digest, user, terms) for digest, terms in tokens.items())
        return Touched(token_hashes=frozenset(set(tokens).symmetric_difference(old)))

    def add_tokens(self, tokens: Iterable[tuple[str, str, TokenTerms]]) -> None:
        """Tokens as (digest, user, terms), in one pass; only terms other than the defaults take room."""
        for digest, user, terms in tokens:
            self.tokens[digest] = user
            if terms.expiry is not None:
                self.token_expiry[digest] = terms.expiry
            if terms.limited:
                self.limited_tokens.add(digest)
            if terms.account:
                self.token_accounts[digest] = terms.account

    def token_terms(self, token_hash: str) -> TokenTerms:
        return TokenTerms(
            self.token_expiry.get(token_hash),
            token_hash in self.limited_tokens,
            self.token_accounts.get(token_hash, ""),
        )

    def expired(self, token_hash: str, now: float) -> bool:
        expiry = self.token_expiry.get(token_hash)
        return expiry is not None and now >= expiry

    def user(self, name: str) -> UserEntry:
        return self.users.setdefault(name, UserEntry())

    def remove_tokens_of(self, user: str) -> list[str]:
        removed = [h for h, owner in self.tokens.items() if owner == user]
        for token_hash in removed:
            del self.tokens[token_hash]
            self.token_expiry.pop(token_hash, None)
            self.limited_tokens.discard(token_hash)
            self.token_accounts.pop(token_hash, None)
        return removed

    def role(self, user: str, org: str) -> str | None:
        entry = self.users.get(user)
        return entry.memberships.get(org) if entry else None

    def can_use(self, user: str, mapping: Mapping) -> bool:
        """Live mappings are public; staging ones only for members of the provider's org; any
        other status (e.g. "error", set by health probes) leaves routing for everyone."""
        if mapping.status == LIVE:
            return True
        if mapping.status != STAGING:
            return False
        entry = self.users.get(user) if user else None
        return entry is not None and self.providers[mapping.provider].org in entry.memberships

    # resolution

    def resolve(self, model_id: str, user: str, task: str, providers: Iterable[str] = ()) -> Resolution:
        """The ordered candidates for a hub model (or a model alias), for this caller and task.

        The hot path of every inference request: plain dict lookups, no call
        per mapping, precedence precomputed on each mapping.
        """
        model = self.catalog.get(model_id)
        if model is None:  # an alias: one more lookup, only for names that are not hub ids
            model_id = self.aliases.get(model_id, "")
            model = self.catalog.get(model_id)
            if model is None:
                return Resolution(model_found=False)
        entry = self.users.get(user) if user else None
        orgs = entry.memberships if entry is not None else _NO_ORGS
        all_providers = self.providers
        chosen: dict[str, Mapping] = {}
        hidden: dict[str, Mapping] = {}  # provider -> its first mapping left out
        for mapping in self._by_model.get(model_id, ()):
            if mapping.task == task:
                status = mapping.status
                if status == LIVE or (status == STAGING and all_providers[mapping.provider].org in orgs):
                    chosen[mapping.provider] = mapping  # one model mapping per provider and task
                else:
                    hidden.setdefault(mapping.provider, mapping)
        buckets = self._tag_filters.get(task)
        if buckets:
            tags = model.tags
            for tag in tags:
                bucket = buckets.get(tag)
                if bucket is None:
                    continue
                for mapping in bucket:
                    current = chosen.get(mapping.provider)
                    if current is not None and current.precedence < mapping.precedence:
                        continue
                    if not all(t in tags for t in mapping.tags):
                        continue
                    status = mapping.status
                    if status == LIVE or (status == STAGING and all_providers[mapping.provider].org in orgs):
                        chosen[mapping.provider] = mapping
                    else:
                        hidden.setdefault(mapping.provider, mapping)
        if not chosen and not hidden and not providers:
            return Resolution(model_found=True, model=model_id)
        return self._ordered(model_id, model, chosen, hidden, providers)

    def resolve_provider_model(self, provider: str, provider_model: str, user: str, task: str) -> Resolution:
        """The provider's own model id: its oldest visible mapping, model mappings first, and the
        hub model that mapping stands for (none for a tag filter's)."""
        mappings = self._by_provider_model.get((provider, task, provider_model), [])
        ordered = sorted(mappings, key=lambda m: (m.type != MODEL, m.seq))
        visible = [m for m in ordered if self.can_use(user, m)]
        if visible:
            best = visible[0]
            candidate = Candidate(provider, provider_model, best.status, best.id, capabilities=best.capabilities)
            return Resolution(model_found=True, candidates=[candidate], model=best.hf_model)
        exclusions = [self._status_exclusion(provider, ordered[0])] if mappings else []
        return Resolution(model_found=bool(mappings), exclusions=exclusions)

    def _ordered(
        self,
        model_id: str,
        model: CatalogModel,
        chosen: dict[str, Mapping],
        hidden: dict[str, Mapping],
        wanted: Iterable[str],
    ) -> Resolution:
        wanted = list(dict.fromkeys(wanted)) if wanted else []
        order = [p for p in wanted if p in chosen] if wanted else sorted(chosen, key=self._order_keys.__getitem__)
        candidates = [_candidate(chosen[p], model_id, model) for p in order]
        left_out = sorted(hidden.keys() - chosen.keys())
        exclusions = [self._status_exclusion(p, hidden[p]) for p in left_out]
        for provider in wanted:
            if provider not in chosen and provider not in hidden:
                exclusions.append(
                    Exclusion(provider, f"provider {provider!r} does not serve {model_id!r} for this task")
                )
        failing = [_candidate(hidden[p], model_id, model) for p in left_out if hidden[p].status == ERROR]
        return Resolution(True, candidates, exclusions, model_id, failing)

    def _status_exclusion(self, provider: str, mapping: Mapping) -> Exclusion:
        """Why a mapping in its status serves no one here (in words that follow the provider's id):
        staging is for the provider's org only, error (failing its health probes) and any other
        status that is not live for no one."""
        status = mapping.status
        if status == ERROR:
            reason = f"failing its health probes ({mapping.status_reason or 'no reason given'})"
        elif status == STAGING:
            org = self.providers[provider].org
            reason = f"staging only, which is for members of org {org!r}"
        else:
            reason = f"status {status!r}, not live"
        return Exclusion(provider, reason, status)


_NO_ORGS: dict[str, str] = {}


def _candidate(mapping: Mapping, model_id: str, model: CatalogModel) -> Candidate:
    if mapping.type == MODEL:
        if mapping.candidate is None:
            mapping.candidate = Candidate(
                mapping.provider,
                mapping.provider_model,
                mapping.status,
                mapping.id,
                status_reason=mapping.status_reason,
                capabilities=mapping.capabilities,
            )
        return mapping.candidate
    adapter = Adapter(mapping.adapter_type, model_id, model.adapter_weights_path, mapping.provider_model)
    return Candidate(
        mapping.provider,
        mapping.provider_model,
        mapping.status,
        mapping.id,
        adapter,
        status_reason=mapping.status_reason,
        capabilities=mapping.capabilities,
    )


def _discard(buckets: dict, key: object, mapping: Mapping) -> None:
    bucket = buckets.get(key)
    if bucket is None:
        return
    bucket[:] = [m for m in bucket if m is not mapping]
    if not bucket:
        del buckets[key]
