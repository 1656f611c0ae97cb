"""The Router's gRPC servicer: OpenAI-compatible inference over the Registry's resolution."""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AbstractContextManager, aclosing, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import TypeVar

import grpc
import orjson
from google.api import httpbody_pb2
from google.protobuf import struct_pb2, timestamp_pb2
from switchboard.billing.v1 import billing_service_pb2 as billing_pb
from switchboard.registry.v1 import internal_service_pb2 as internal_pb
from switchboard.router.v1 import router_service_pb2 as router_pb
from switchboard.router.v1 import router_service_pb2_grpc as router_grpc

from services.common import params
from services.common.accounts import OPERATOR_ACCOUNT
from services.common.auth import API_KEY_HEADER, TOKEN_PREFIXES, credential, parse_bearer
from services.common.counters import MemoryCounters
from services.common.errors import ApiError, Code, invalid_argument, not_found, permission_denied, unavailable
from services.common.pricing import estimate_nano_usd, prompt_tokens_estimate
from services.common.providers import CAPABILITY_FIELDS, PROVIDER_METADATA_KEY
from services.common.surface import ANSWER_METADATA_IN_TRAILERS, ANSWER_METADATA_KEY
from services.common.task_formats import (
    DEFAULT_OUTPUT_TOKENS,
    GENERATE,
    OPERATIONS,
    Bill,
    TaskCall,
    TaskInput,
    reservation,
)
from services.common.telemetry import TRACEPARENT, InferenceMeasure
from services.router import selection
from services.router.anonymous import AnonymousClients, AnonymousLimits, client_address
from services.router.completions_api import Completions
from services.router.directory import Directory, ProviderEntry, Resolved
from services.router.health import ProviderHealthMethods
from services.router.key_limits import Grant, KeyLimits
from services.router.measurements import Measurements
from services.router.messages_api import Messages, input_tokens
from services.router.request_ids import REQUEST_ID_METADATA_KEY, request_id
from services.router.responses_api import Responses
from services.router.spending import Spending
from services.router.spool import Spool
from services.router.tasks import TaskMethods
from services.router.timing import TimedMeasure, answer_timing, timed
from services.router.translation import Translation, json_object
from services.router.unit_prices import unit_price
from services.router.upstream import CHAT_PATH, IMAGES_PATH, Opened, Upstreams, relay, rewrite
from services.router.usage_bounds import believable, believed_images

log = logging.getLogger(__name__)
T = TypeVar("T")  # what a route's answer is before its API shapes it
R = TypeVar("R")  # and after
UNSERVABLE_MESSAGE = "the provider's answer could not be served"

CHAT = "conversational"
TEXT_TO_IMAGE = "text-to-image"
UINT32_MAX = 2**32 - 1  # Model.created is uint32 unix seconds
JSON = "application/json"
EVENT_STREAM = "text/event-stream"
# The caller of a call without a token in anonymous mode: no user, no memberships, no preferences.
ANONYMOUS = internal_pb.Caller()
# The Registry's refusals of what a request asked for (never an outage).
CALLER_MISTAKES = frozenset({Code.INVALID_ARGUMENT, Code.NOT_FOUND})
# What each route's body must carry and may carry (params.py); everything else passes through.
BODY_RULES = {CHAT: (params.CHAT, params.REQUIRED_CHAT), TEXT_TO_IMAGE: (params.IMAGES, params.REQUIRED_IMAGES)}


def _headers(context: grpc.aio.ServicerContext) -> dict[str, str]:
    """The request headers this service reads, in one pass over the metadata."""
    found = {}
    for name, value in context.invocation_metadata() or ():
        if name in ("authorization", API_KEY_HEADER, "x-hf-bill-to", TRACEPARENT, ANSWER_METADATA_KEY):
            found[name] = value if isinstance(value, str) else value.decode()
    return found


def _credential(headers: dict[str, str]) -> str | None:
    return credential(headers.get("authorization"), headers.get(API_KEY_HEADER))


def _client(context: grpc.aio.ServicerContext) -> str:
    """The address an anonymous call is counted against (services/router/anonymous.py)."""
    forwarded = next((v for k, v in context.invocation_metadata() or () if k == "x-forwarded-for"), "")
    return client_address(forwarded if isinstance(forwarded, str) else "", context.peer() or "")


def hf_to_openai(request: router_pb.TextToImageRequest) -> httpbody_pb2.HttpBody:
    """A Hugging Face text-to-image body as an OpenAI images body asking for b64_json."""
    try:
        body = orjson.loads(request.body.data)
    except orjson.JSONDecodeError:
        raise invalid_argument("INVALID_REQUEST", "the request body is not valid JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), str):
        raise invalid_argument(
            "INVALID_REQUEST", 'the body must be {"inputs": "<prompt>", "parameters": {...}}', "inputs"
        )
    parameters = body.get("parameters") if isinstance(body.get("parameters"), dict) else {}
    payload = {k: v for k, v in parameters.items() if k not in ("width", "height")}
    payload.update(model=request.model, prompt=body["inputs"], response_format="b64_json", n=1)
    side = params.integer(1, params.MAX_IMAGE_SIDE)
    for name in ("width", "height"):
        if parameters.get(name) is not None:
            side(f"parameters.{name}", parameters[name])
    if parameters.get("width") and parameters.get("height"):
        payload["size"] = f"{parameters['width']}x{parameters['height']}"
    return httpbody_pb2.HttpBody(content_type=JSON, data=orjson.dumps(payload))


def _json_payload(raw: bytes, task: str, translate: Callable[[dict], dict] | None = None) -> dict:
    """A chat or images body (another API's, translated to chat): a JSON object within its
    route's rules (params.py)."""
    payload = json_object(raw)
    if translate is not None:
        payload = translate(payload)
    params.check_body(payload, *BODY_RULES[task])
    return payload


def _ask_for_usage(payload: dict) -> bool:
    """Asks the provider to report a stream's usage; True when the caller did not ask for it
    (the usage event is then kept from the caller)."""
    options = payload.get("stream_options") or {}
    payload["stream_options"] = {**options, "include_usage": True}
    return options.get("include_usage") is not True


def _images_json(opened: Opened) -> bytes:
    """An images answer as the caller gets it: no usage, the provider's secrets redacted."""
    opened.answer.pop("usage", None)
    return opened.route.provider.redactor.dumps(opened.answer)


def _first_png(opened: Opened) -> bytes:
    """The first image of a b64_json answer; 502 when the provider sent none, or one that carries
    any form of a secret (docs/secrets.md)."""
    try:
        image = base64.b64decode(opened.answer["data"][0]["b64_json"], validate=True)
    except (KeyError, IndexError, TypeError, ValueError):
        raise unavailable("UPSTREAM_ERROR", "the provider answered without an image") from None
    return opened.route.provider.redactor.binary(image)


def _owner(model: str) -> str:
    """OpenAI's owned_by of a hub model id: its namespace; Switchboard's for an id without one."""
    return model.split("/", 1)[0] if "/" in model else "switchboard"


def _reserved_tokens(payload: dict, body_size: int) -> tuple[int, int]:
    """(input, output) tokens a chat request's reservation assumes: the prompt estimated from the
    body's size, the most the caller let the answer hold."""
    output = payload.get("max_completion_tokens") or payload.get("max_tokens") or DEFAULT_OUTPUT_TOKENS
    return prompt_tokens_estimate(body_size), output


def _now() -> timestamp_pb2.Timestamp:
    seconds, nanos = divmod(time.time_ns(), 1_000_000_000)
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)


@dataclass
class Call:
    """One inference call, from its checks to its ledger record."""

    request_id: str
    task: str
    caller: internal_pb.Caller
    account: str
    model: str
    payload: dict
    body_size: int
    routes: list[selection.Route]
    estimate_nano_usd: int
    started: timestamp_pb2.Timestamp
    measure: InferenceMeasure
    traceparent: str = ""  # the caller's (or Envoy's) W3C trace context, passed on to the provider
    metadata_in_trailers: bool = False  # asked for (the edge asks for REST calls): see _serve_unary
    left_out: dict[str, list[selection.Reason]] = field(default_factory=dict)  # providers not tried, and why
    reserved: bool = False
    grant: Grant | None = None  # the API key's counted limits, when it has any
    upstream_seconds: float = 0.0  # waiting for providers, every attempt included (AnswerTiming)
    task_call: TaskCall | None = None  # a task route's request (task_formats.py), sent in each provider's format
    bill: Bill | None = None  # a task answer's usage, in its task's unit

    @property
    def user(self) -> str:
        return self.caller.user


class RouterServicer(TaskMethods, ProviderHealthMethods, router_grpc.RouterServiceServicer):
    """OpenAI-compatible inference: auth, selection, failover, billing; the providers' health."""

    def __init__(
        self,
        directory: Directory,
        upstreams: Upstreams,
        spending: Spending,
        spool: Spool,
        measurements: Measurements,
        hub_url: str,
        anonymous_account: str = "",
        key_limits: KeyLimits | None = None,
        anonymous_clients: AnonymousClients | None = None,
    ) -> None:
        self.directory = directory
        self.key_limits = key_limits or KeyLimits(MemoryCounters())
        self.anonymous_account = anonymous_account
        self.anonymous_clients = anonymous_clients or AnonymousClients(AnonymousLimits())
        self.upstreams = upstreams
        self.spending = spending
        self.spool = spool
        self.measurements = measurements
        self.hub_url = hub_url

    # --- inference -------------------------------------------------------------------------

    async def _known_caller(self, token: str) -> internal_pb.Caller | None:
        """The token's caller. In anonymous mode a key not shaped like a Switchboard token that
        the Registry does not know (a placeholder SDKs insist on: EMPTY, sk-no-key-required)
        is None, as if no key was sent; a Switchboard-shaped one that is wrong or revoked is a 401."""
        try:
            return await self.directory.authenticate(token)
        except ApiError as error:
            placeholder = self.anonymous_account and not token.startswith(TOKEN_PREFIXES)
            if placeholder and error.grpc_code == Code.UNAUTHENTICATED:
                return None
            raise

    async def _identified(self, headers: dict[str, str]) -> tuple[internal_pb.Caller, str]:
        """The caller and the account their calls are billed to. Without a key, in anonymous
        mode: a caller with no user (live mappings only, no orgs) billed to the anonymous
        account; otherwise a token the Registry knows, or 401."""
        token = parse_bearer(_credential(headers), required=not self.anonymous_account)
        caller = await self._known_caller(token) if token else None
        if caller is None:
            return ANONYMOUS, self.anonymous_account
        return caller, caller.user or OPERATOR_ACCOUNT

    def _anonymous_call(self, context: grpc.aio.ServicerContext) -> AbstractContextManager:
        """For a call that may be billed to the anonymous account (it carries no key shaped like a
        Switchboard token), its client's slot for the call (anonymous.py)."""
        if not self.anonymous_account:  # the metadata is read only in anonymous mode
            return nullcontext()
        token = (_credential(_headers(context)) or "").partition(" ")[2].strip()
        if not token.startswith(TOKEN_PREFIXES):
            return self.anonymous_clients.admitted(_client(context))
        return nullcontext()

    def _inference(self, operation: str, context: grpc.aio.ServicerContext) -> AbstractContextManager[InferenceMeasure]:
        """One inference call's measure: the call holds its client's anonymous slot when it may be
        billed to the anonymous account, and every error it answers carries its timing."""
        if not self.anonymous_account:  # no slot to hold: the measure alone (no generator per call)
            return TimedMeasure(operation)
        return self._holding_slot(TimedMeasure(operation), context)

    @contextmanager
    def _holding_slot(self, measure: TimedMeasure, context: grpc.aio.ServicerContext) -> Iterator[InferenceMeasure]:
        with measure, self._anonymous_call(context):
            yield measure

    async def _caller(self, headers: dict[str, str]) -> tuple[internal_pb.Caller, str]:
        caller, account = await self._identified(headers)
        bill_to = headers.get("x-hf-bill-to", "").strip() or caller.account  # an org's token bills the org
        if not bill_to:
            return caller, account
        if not any(m.org == bill_to for m in caller.memberships):
            raise permission_denied(
                "BILL_TO_FORBIDDEN", f"you are not a member of {bill_to[:64]}: cannot bill it", "X-HF-Bill-To"
            )
        return caller, bill_to

    async def _inference_caller(self, context: grpc.aio.ServicerContext) -> tuple[internal_pb.Caller, str]:
        """The caller of an inference call (anonymous mode allowed) and the account it bills."""
        return await self._caller(_headers(context))

    async def _routes(
        self, task: str, payload: dict, path_provider: str, caller: internal_pb.Caller, needs: selection.Needs
    ) -> tuple[str, selection.Fit]:
        """The hub (or provider) model id to answer with, and the routes that fit the request's
        needs, in the order to try them, with the providers left out."""
        model = payload["model"]
        if path_provider:
            selection.check_path_provider(payload.get("provider"), path_provider)
            routes = await self._provider_route(task, model, path_provider, caller)
            return model, self._fitting(routes, needs, (), model)
        chosen, resolved = await self._resolution(model, payload.get("provider"), caller.user, task)
        answer = resolved.answer
        routes = resolved.routes(self.hub_url)
        model = answer.model or chosen.model  # the hub id a model alias stands for
        if not answer.model_found or not (routes or chosen.providers or chosen.only):
            raise selection.explain_no_candidate(answer, chosen.model, task)
        return model, selection.plan(
            routes,
            chosen,
            answer.exclusions,
            needs,
            task,
            self.measurements.ranking,
            caller.preferred_providers,
            self.upstreams.breakers.is_open,
        )

    def _fitting(
        self,
        routes: list[selection.Route],
        needs: selection.Needs,
        exclusions: Sequence[internal_pb.Exclusion],
        model: str,
    ) -> selection.Fit:
        return selection.fitting(routes, needs, exclusions, model, self.upstreams.breakers.is_open)

    async def _resolution(
        self, model: str, provider_field: object, user: str, task: str
    ) -> tuple[selection.Selection, Resolved]:
        """What the caller asked for, and the Registry's one answer for it (which carries every
        provider the request names that exists). When the Registry refuses the model, a mistake
        in the request's providers (an unknown one, a conflict) is the error, as it comes first."""
        named = selection.named_providers(model, provider_field)
        try:
            resolved = await self.directory.resolve(selection.split_model(model)[0], user, task, named)
        except ApiError as error:
            if error.grpc_code in CALLER_MISTAKES:
                selection.parse_model(model, provider_field, await self.directory.knowing(named) if named else {})
            raise
        return selection.parse_model(model, provider_field, resolved.providers), resolved

    async def _provider_resolution(self, provider: str, model: str, user: str, task: str) -> Resolved | None:
        """The provider's mapping of its own model id, with the provider; None when there is no
        such provider (the Registry's refusal then says so, in its words)."""
        try:
            return await self.directory.resolve_provider_model(provider, model, user, task)
        except ApiError as error:
            if error.grpc_code in CALLER_MISTAKES and provider not in await self.directory.knowing([provider]):
                return None
            raise

    async def _provider_route(
        self, task: str, model: str, provider: str, caller: internal_pb.Caller
    ) -> list[selection.Route]:
        resolved = await self._provider_resolution(provider, model, caller.user, task)
        if resolved is None:
            raise not_found("PROVIDER_NOT_FOUND", f"provider {provider[:96]} does not exist")
        routes = resolved.routes(self.hub_url)
        if not routes:
            raise invalid_argument(
                "MODEL_NOT_SUPPORTED", f"model {model} not supported by provider {provider}", "model"
            )
        self.key_limits.allow_provider_model(caller, resolved.answer.model, provider, model)
        return routes

    def _estimate(self, task: str, payload: dict, body_size: int, route: selection.Route) -> int:
        """The reservation's estimate, from checked parameters (params.py bounds every one)."""
        price = route.provider.prices.get(route.provider_model)
        if task == TEXT_TO_IMAGE:
            return estimate_nano_usd(price, task, images=payload.get("n") or 1)
        input_tokens, output_tokens = _reserved_tokens(payload, body_size)
        return estimate_nano_usd(price, task, input_tokens=input_tokens, output_tokens=output_tokens)

    async def _prepare(
        self,
        task: str,
        request,
        context: grpc.aio.ServicerContext,
        measure: InferenceMeasure,
        task_input: Callable[[], TaskInput] | None = None,
        translate: Callable[[dict], dict] | None = None,
    ) -> Call:
        """Checks the caller and the body (a task route's by `task_input`; another API's turned into
        a chat body by `translate` first), picks the routes, reserves."""
        started = _now()
        headers = _headers(context)
        caller, account = await self._caller(headers)
        raw = request.body.data
        value = task_input() if task_input is not None else None
        if value is None:
            payload = _json_payload(raw, task, translate)
            max_price = payload.pop("max_price", None)  # Switchboard's to honour: never sent on
            needs = selection.needs_of(payload, prompt_tokens_estimate(len(raw)), max_price)
        else:
            payload, needs = value.payload(), selection.needs_of({}, 0, value.max_price)
        # A provider-named call's model is the provider's own id: its allow-list check waits for the hub model.
        grant = await self.key_limits.admit(caller, None if request.provider else payload["model"])
        model, fit = await self._routes(task, payload, request.provider, caller, needs)
        routes = fit.routes
        if not request.provider:  # resolved in the catalog: a bounded label
            measure.model = model
        if value is None:
            estimate = self._estimate(task, payload, len(raw), routes[0])
        else:
            estimate = reservation(value).estimate(routes[0].provider.prices.get(routes[0].provider_model), task)
        if caller is ANONYMOUS:
            param = "n" if task == TEXT_TO_IMAGE else "max_tokens" if value is None else value.input_param
            self.anonymous_clients.reserve(_client(context), estimate, param)
        call = Call(
            request_id(), task, caller, account, model, payload, len(raw), routes, estimate, started, measure,
            headers.get(TRACEPARENT, ""), headers.get(ANSWER_METADATA_KEY) == ANSWER_METADATA_IN_TRAILERS, fit.left_out,
            task_call=TaskCall(value) if value else None,
        )  # fmt: skip
        call.grant = grant
        call.reserved = await self.spending.reserve(call.request_id, account, estimate)
        return call

    async def _open(self, call: Call, path: str, stream: bool, context: grpc.aio.ServicerContext) -> Opened:
        """The first candidate's valid answer; the reservation is released when there is none."""
        remaining = context.time_remaining()
        began = time.monotonic()
        deadline = None if remaining is None else began + remaining
        try:
            opened = await self.upstreams.first_answer(
                call.routes, call.task_call or call.payload, path, stream, deadline,
                OPERATIONS.get(call.task, GENERATE), call.traceparent,
            )  # fmt: skip
        except ApiError as error:
            self._abandon(call)
            timed(error, call.measure.started, time.monotonic() - began)
            if error.grpc_code in (Code.UNAVAILABLE, Code.RESOURCE_EXHAUSTED):  # every route tried failed
                raise selection.with_left_out(error, call.left_out) from None
            raise
        except BaseException:
            self._abandon(call)
            raise
        call.upstream_seconds = time.monotonic() - began
        call.measure.provider = opened.route.provider.id
        return opened

    def _abandon(self, call: Call) -> None:
        """Nothing will be served: the reservation, if any, goes back."""
        if call.reserved:
            self.spending.release(call.request_id)

    def _shaped(self, call: Call, shape: Callable[[T], R], answer: T) -> R:
        """The answer in its caller's shape; an answer that cannot be shaped is the provider's
        failure (an ApiError; anything else the checks let through: a 502 all the same, its
        traceback in the log), and nothing was served."""
        try:
            return shape(answer)
        except ApiError:
            self._abandon(call)
            raise
        except Exception:
            self._abandon(call)
            log.exception("a provider's answer passed the checks but could not be served")
            raise unavailable("UPSTREAM_ERROR", UNSERVABLE_MESSAGE) from None

    @staticmethod
    def _answer_metadata(call: Call, opened: Opened) -> list[tuple[str, str | bytes]]:
        """What an answer tells besides itself: which provider served it, our request id and the
        provider's, the timing, the key's rates."""
        metadata = [
            (PROVIDER_METADATA_KEY, opened.route.provider.id),
            (REQUEST_ID_METADATA_KEY, call.request_id),
            answer_timing(call.measure.started, call.upstream_seconds),
        ]
        provider_request_id = opened.provider_request_id
        if provider_request_id and provider_request_id.isascii() and provider_request_id.isprintable():
            metadata.append((opened.route.provider.request_id_metadata_key, provider_request_id))
        if call.grant is not None:
            metadata += call.grant.metadata()
        return metadata

    async def _send_headers(self, call: Call, opened: Opened, context: grpc.aio.ServicerContext) -> None:
        """The answer's metadata as its headers, before the answer: a write of its own."""
        await context.send_initial_metadata(self._answer_metadata(call, opened))

    async def _begin_stream(
        self, call: Call, opened: Opened, context: grpc.aio.ServicerContext, measure: InferenceMeasure
    ) -> None:
        """Sends a stream's headers and journals its provisional record."""
        measure.first_token(opened.first_at)
        try:
            await self._send_headers(call, opened, context)
        except BaseException:  # the caller left before the answer began: nothing was served
            opened.response.release()
            self._abandon(call)
            raise
        # Journaled now: should this process die mid-stream, the answer begun is billed at its estimate.
        self._record(call, opened, 0, 0, 0, call.estimate_nano_usd, provisional=True, bill=call.bill)

    async def _serve_unary(
        self, call: Call, opened: Opened, context: grpc.aio.ServicerContext, images: int = 0
    ) -> None:
        """Heads a checked unary answer, then records it. Asked for (the edge asks for REST calls:
        surface.py), the metadata goes in the trailers, which leave with the answer and its status in
        gRPC's last write; else it is sent before the answer, in a write of its own. A caller gone
        before that send, or (trailers) before the provider's answer was read, costs nothing: its
        cancellation ends the call at that await."""
        if call.metadata_in_trailers:
            context.set_trailing_metadata(self._answer_metadata(call, opened))
        else:
            try:
                await self._send_headers(call, opened, context)
            except BaseException:
                self._abandon(call)
                raise
        self._finish(call, opened, images)

    def _usage(self, call: Call, opened: Opened, images: int) -> tuple[int, int, int]:
        """(input tokens, output tokens, estimate): what the provider reported, when believable
        (usage_bounds.py); else for a stream, output counted as the content events sent and input
        estimated from the request size; for a unary answer, the reservation's estimate."""
        route, usage = opened.route, opened.usage
        price = route.provider.prices.get(route.provider_model)
        if images:
            return 0, 0, estimate_nano_usd(price, call.task, images=images)
        if believable(usage, call.payload, route.candidate, route.provider.id):
            input_tokens, output_tokens = usage.input_tokens, usage.output_tokens
        elif opened.response is not None:
            input_tokens, output_tokens = prompt_tokens_estimate(call.body_size), max(1, usage.chunks)
        else:
            return 0, 0, call.estimate_nano_usd
        estimate = estimate_nano_usd(price, call.task, input_tokens=input_tokens, output_tokens=output_tokens)
        return input_tokens, output_tokens, estimate

    def _finish(self, call: Call, opened: Opened, images: int = 0) -> None:
        """Measures the answer and hands its ledger record to the background sender."""
        ended = time.monotonic()
        route = opened.route
        bill = call.bill  # a task answer, billed in its task's unit
        if bill is not None:
            input_tokens, output_tokens, images = bill.input_tokens, bill.output_tokens, bill.images
            estimate = bill.estimate(route.provider.prices.get(route.provider_model), call.task)
        else:
            images = believed_images(images, call.payload, route.provider.id)
            input_tokens, output_tokens, estimate = self._usage(call, opened, images)
        tokens = output_tokens or opened.usage.chunks
        self.measurements.observe(
            route.provider.id, route.provider_model, opened.first_at - opened.sent_at, tokens, ended - opened.sent_at
        )
        if not images:
            call.measure.tokens(input_tokens, output_tokens)
        used = input_tokens + output_tokens
        if not used and call.task == CHAT:  # a unary chat answer without believable usage: as reserved
            used = sum(_reserved_tokens(call.payload, call.body_size))
        self.key_limits.settle(call.grant, used, estimate)
        self._record(call, opened, input_tokens, output_tokens, images, estimate, bill=bill)

    def _record(
        self,
        call: Call,
        opened: Opened,
        input_tokens: int,
        output_tokens: int,
        images: int,
        estimate: int,
        provisional: bool = False,
        bill: Bill | None = None,
    ) -> None:
        route = opened.route
        self.spool.record(
            billing_pb.LedgerRecord(
                request_id=call.request_id,
                provider_request_id=opened.provider_request_id,
                provider=route.provider.id,
                model=call.model,
                provider_model=route.provider_model,
                task=call.task,
                caller=call.user,
                account=call.account,
                start_time=call.started,
                end_time=_now(),
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                images=images,
                estimated_nano_usd=estimate,
                provisional=provisional,
                time_to_first_token_ms=round((opened.first_at - opened.sent_at) * 1000),
                unit=bill.unit if bill else "",
                units=bill.units if bill else 0,
            )
        )

    async def CreateChatCompletion(
        self, request: router_pb.CreateChatCompletionRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        with self._inference(OPERATIONS[CHAT], context) as measure:
            async with aclosing(self._chat(request, context, measure)) as bodies:  # closed in this task
                async for body in bodies:
                    yield body

    async def _chat(
        self,
        request: router_pb.CreateChatCompletionRequest,
        context: grpc.aio.ServicerContext,
        measure: InferenceMeasure,
        translation: Translation | None = None,
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        """A chat answer; a translated call's unary answer already in its API's shape (one it
        cannot be made into is the provider's failure, and costs its caller nothing)."""
        translate = translation.chat_payload if translation else None
        call = await self._prepare(CHAT, request, context, measure, translate=translate)
        stream = call.payload.get("stream") is True
        hide_usage = stream and _ask_for_usage(call.payload)
        opened = await self._open(call, CHAT_PATH, stream, context)
        opened.usage.cost = lambda: self._usage(call, opened, 0)[2]  # usage objects state the record's estimate
        if not stream:
            data = rewrite(opened.answer, call.model, opened.usage, opened.route.provider.redactor)
            if translation is not None:
                data = self._shaped(call, translation.unary_body, data)
            await self._serve_unary(call, opened, context)
            yield httpbody_pb2.HttpBody(content_type=JSON, data=data)
            return
        await self._begin_stream(call, opened, context, measure)
        try:
            async with aclosing(self._relay(call, opened, hide_usage)) as events:
                async for event in events:
                    yield httpbody_pb2.HttpBody(content_type=EVENT_STREAM, data=event)
        finally:
            self._finish(call, opened)

    async def _translated(
        self, request, context: grpc.aio.ServicerContext, translation: Translation
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        """Another API's call served as a chat completion: the same checks, selection, failover
        and billing; the answer in that API's shape."""
        chat = router_pb.CreateChatCompletionRequest(provider=request.provider, body=request.body)
        with self._inference(OPERATIONS[CHAT], context) as measure:
            async with aclosing(self._chat(chat, context, measure, translation)) as bodies:
                async for body in translation.answer(bodies):
                    yield body

    async def CreateResponse(
        self, request: router_pb.CreateResponseRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        async for body in self._translated(request, context, Responses()):
            yield body

    async def CreateMessage(
        self, request: router_pb.CreateMessageRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        async for body in self._translated(request, context, Messages()):
            yield body

    async def CountMessageTokens(
        self, request: router_pb.CountMessageTokensRequest, context: grpc.aio.ServicerContext
    ) -> httpbody_pb2.HttpBody:
        await self._caller(_headers(context))
        return httpbody_pb2.HttpBody(content_type=JSON, data=input_tokens(json_object(request.body.data)))

    async def CreateCompletion(
        self, request: router_pb.CreateCompletionRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        async for body in self._translated(request, context, Completions()):
            yield body

    async def _relay(self, call: Call, opened: Opened, hide_usage: bool) -> AsyncIterator[bytes]:
        """The provider's SSE events; a stream that breaks ends with an error event, never a switch."""
        try:
            async with aclosing(relay(opened, call.model, hide_usage)) as events:
                async for event in events:
                    yield event
        except (OSError, TimeoutError, ValueError) as exc:
            self.upstreams.stream_broke(opened.route, exc)
            log.warning("provider stream broke", extra={"provider": opened.route.provider.id,
                                                         "error": type(exc).__name__})  # fmt: skip
            error = unavailable("STREAM_INTERRUPTED", f"provider {opened.route.provider.id} broke off the stream")
            yield b"data: " + orjson.dumps(error.openai_body()) + b"\n\n"
            yield b"data: [DONE]\n\n"

    async def _image(
        self,
        request: router_pb.CreateImageRequest,
        context: grpc.aio.ServicerContext,
        body_of: Callable[[Opened], bytes],
    ) -> bytes:
        """An images answer's body for the caller, billed and headed once `body_of` made it."""
        with self._inference(OPERATIONS[TEXT_TO_IMAGE], context) as measure:
            call = await self._prepare(TEXT_TO_IMAGE, request, context, measure)
            opened = await self._open(call, IMAGES_PATH, False, context)
            body = self._shaped(call, body_of, opened)
            await self._serve_unary(call, opened, context, images=len(opened.answer["data"]))
            return body

    async def CreateImage(
        self, request: router_pb.CreateImageRequest, context: grpc.aio.ServicerContext
    ) -> httpbody_pb2.HttpBody:
        body = await self._image(request, context, _images_json)
        return httpbody_pb2.HttpBody(content_type=JSON, data=body)

    async def TextToImage(
        self, request: router_pb.TextToImageRequest, context: grpc.aio.ServicerContext
    ) -> httpbody_pb2.HttpBody:
        """A hub task call: text-to-image here, every other task by the task methods."""
        task = await self._hub_task(request, context)
        if task != TEXT_TO_IMAGE:
            return await self._hub_call(task, request, context)
        images = router_pb.CreateImageRequest(provider=request.provider, body=hf_to_openai(request))
        body = await self._image(images, context, _first_png)
        return httpbody_pb2.HttpBody(content_type="image/png", data=body)

    # --- catalog ---------------------------------------------------------------------------

    async def _optional_user(self, context: grpc.aio.ServicerContext) -> str:
        token = parse_bearer(_credential(_headers(context)), required=False)
        caller = await self._known_caller(token) if token else None
        return caller.user if caller else ""

    def _model_provider(
        self, candidate: internal_pb.Candidate, entry: ProviderEntry | None, pipeline_tag: str
    ) -> router_pb.ModelProvider:
        """The hub router's per-provider entry; what the provider model supports as its mapping
        says, each left out while unknown; its price per unit of the model's task when set."""
        price = entry.prices.get(candidate.provider_model) if entry else None
        stats = self.measurements.get(candidate.provider, candidate.provider_model)
        answer = router_pb.ModelProvider(
            provider=candidate.provider,
            status=candidate.status,
            status_reason=candidate.status_reason or None,
            provider_model=candidate.provider_model,
            time_to_first_token_ms=stats.ttft_ms if stats else 0.0,
            throughput_tokens_per_second=stats.tokens_per_second if stats else 0.0,
        )
        for name in CAPABILITY_FIELDS:
            if candidate.HasField(name):
                setattr(answer, name, getattr(candidate, name))
        if price and (price.input_token_nano_usd or price.output_token_nano_usd):
            # nano-USD per token is USD per billion tokens: / 1000 gives USD per million.
            per_million = router_pb.ModelPricing(
                input=price.input_token_nano_usd / 1000, output=price.output_token_nano_usd / 1000
            )
            answer.pricing.CopyFrom(per_million)
            answer.input_price_per_million, answer.output_price_per_million = per_million.input, per_million.output
            answer.input_token_nano_usd = price.input_token_nano_usd
            answer.output_token_nano_usd = price.output_token_nano_usd
        if per_unit := unit_price(pipeline_tag, price):
            answer.unit_price.CopyFrom(per_unit)
        return answer

    def _model(self, served: internal_pb.ServedModel, known: dict[str, ProviderEntry]) -> router_pb.Model:
        return router_pb.Model(
            id=served.id,
            object="model",
            created=min(max(served.create_time.seconds, 0), UINT32_MAX),
            owned_by=_owner(served.alias_of or served.id),
            pipeline_tag=served.pipeline_tag,
            providers=[self._model_provider(c, known.get(c.provider), served.pipeline_tag) for c in served.candidates],
        )

    async def ListModels(
        self, request: router_pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> router_pb.ListModelsResponse:
        user = await self._optional_user(context)
        served = await self.directory.served_models(user)
        known = await self.directory.providers()
        return router_pb.ListModelsResponse(object="list", data=[self._model(m, known) for m in served.models])

    async def GetModel(self, request: router_pb.GetModelRequest, context: grpc.aio.ServicerContext) -> router_pb.Model:
        user = await self._optional_user(context)
        served = await self.directory.served_models(user, request.id)
        match = [m for m in served.models if m.id == request.id]
        if not match:
            raise not_found("MODEL_NOT_FOUND", f"model {request.id[:200]} is not served to you")
        return self._model(match[0], await self.directory.providers())

    async def ListInferenceProviders(
        self, request: router_pb.ListInferenceProvidersRequest, context: grpc.aio.ServicerContext
    ) -> router_pb.ListInferenceProvidersResponse:
        entries = sorted((await self.directory.providers()).values(), key=lambda e: e.id)
        providers = [router_pb.Provider(id=e.id, url=e.base_url, tasks=e.tasks) for e in entries]
        return router_pb.ListInferenceProvidersResponse(providers=providers)

    async def ListProviders(
        self, request: router_pb.ListProvidersRequest, context: grpc.aio.ServicerContext
    ) -> struct_pb2.ListValue:
        """The typed listing as the JSON array the seed's clients read."""
        typed = await self.ListInferenceProviders(router_pb.ListInferenceProvidersRequest(), context)
        providers = struct_pb2.ListValue()
        for provider in typed.providers:
            providers.append({"id": provider.id, "url": provider.url, "tasks": list(provider.tasks)})
        return providers

    async def GetProvider(
        self, request: router_pb.GetProviderRequest, context: grpc.aio.ServicerContext
    ) -> router_pb.Provider:
        # One just created may be newer than the change notice that will announce it.
        entry = (await self.directory.knowing([request.id])).get(request.id)
        if entry is None:
            raise not_found("PROVIDER_NOT_FOUND", f"provider {request.id[:96]} does not exist")
        user = await self._optional_user(context)
        served = await self.directory.served_models(user)
        models = sorted({m.id for m in served.models if any(c.provider == entry.id for c in m.candidates)})
        accepted = list(params.CHAT) if CHAT in entry.tasks or not entry.tasks else []
        if TEXT_TO_IMAGE in entry.tasks:
            accepted += [p for p in params.IMAGES if p not in accepted]
        formats = {task: entry.format_of(task) for task in entry.tasks}
        return router_pb.Provider(
            id=entry.id, url=entry.base_url, models=models, params=accepted, tasks=entry.tasks, task_formats=formats
        )
